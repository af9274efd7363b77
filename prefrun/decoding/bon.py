"""``decode=bon``: best-of-N by a reward source (Beirami et al. 2024, arXiv 2401.01879; Stiennon et al. 2020).

    y_1 … y_N ~ π(· | x)           one prefill per prompt, the N samples share it (the sampler's n = N)
    ŷ = y_i*,  i* = argmax_i r(x, y_i)   r the reward source's score, all B·N responses in one call

Ties (the sort oracle's reward is discrete, so they are common): ``tie_break=first`` keeps the first best
sample (deterministic, the sampler's order), ``tie_break=random`` draws one of the best uniformly with
``decode.seed``. A response the source cannot score (NaN) never wins against one it scores; a prompt with
no scored sample keeps its first.

KL from the model decoded, π. On a continuous reward BoN_N has density N u^{N−1} on the calibrated reward
u, so (prefrun.evaluation.infalign)

    KL(BoN_N ‖ π) = log N − (N − 1)/N           exact for a continuous reward, an upper bound with ties
    win rate(BoN_N ≻ π) = N / (N + 1)

and the plug-in estimate E_{ŷ}[log N + (N − 1) log C(ŷ)], C(ŷ) the mid-rank of r(x, ŷ) among ``calibration``
= m fresh samples of π per prompt (independent of the N, seed + 1; infalign.calibrate), clipped below at
1/(2m) so a best below every calibration sample stays finite. The calibration samples measure, they do not
decode: their forwards and reward call are not in the report's cost. ``calibration=0`` skips the estimate.

Settings (conf/decode/bon.yaml): n, reward (null = the run's ``reward`` source; a source of its own with
``+reward@decode.reward=<name>``), tie_break, seed, calibration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from prefrun.decoding import DECODERS
from prefrun.decoding.base import Costs, Decoded, positive_int
from prefrun.errors import PrefrunError

TIE_BREAKS = ("first", "random")


def best_index(scores: torch.Tensor, tie_break: str = "first", seed: int = 0) -> torch.Tensor:
    """[B] index of each row's best score in [B, N] ``scores`` (NaN loses; an all-NaN row gives 0)."""
    s = torch.nan_to_num(scores.double(), nan=-torch.inf)
    best = s.max(dim=1, keepdim=True).values
    ties = (s == best) & ~torch.isinf(best)
    if tie_break == "first":
        return torch.where(ties.any(1), ties.double().argmax(1), 0)
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand(s.shape, generator=generator, dtype=torch.float64)  # a uniform pick among the tied
    return torch.where(ties.any(1), torch.where(ties, keys, -1.0).argmax(1), 0)


def pick(samples: Any, index: torch.Tensor) -> Any:
    """The K = 1 Samples of ``samples`` [B][N] holding sample ``index[b]`` of each prompt."""
    from prefrun.generation import Samples

    chosen = [int(i) for i in index]
    ended = samples.eos[torch.arange(len(chosen)), index]
    return Samples(
        prompt_ids=samples.prompt_ids,
        token_ids=[[row[i]] for row, i in zip(samples.token_ids, chosen)],
        texts=[[row[i]] for row, i in zip(samples.texts, chosen)],
        logps=samples.logps[torch.arange(len(chosen)), index][:, None],
        eos=ended[:, None],
        truncated=int((~ended).sum()),
    )


@DECODERS.register("bon")
class BestOfN:
    name = "bon"
    needs_reward = True

    def __init__(self, cfg: Any, reward: Callable[[], Any] | None = None) -> None:
        self.n = positive_int(cfg, "n", "samples per prompt, the best kept", "8")
        self.tie_break = str(cfg.get("tie_break", "first"))
        if self.tie_break not in TIE_BREAKS:
            raise PrefrunError(f"decode.tie_break={self.tie_break!r}: must be one of {', '.join(TIE_BREAKS)}")
        self.seed = int(cfg.get("seed", 0))
        calibration = cfg.get("calibration", 0)
        self.calibration = 0 if calibration in (0, None) else positive_int(cfg, "calibration", "samples", "16")
        if reward is None:
            raise PrefrunError(
                "decode=bon ranks samples by a reward source and has none: set reward=<source> "
                "(or +reward@decode.reward=<source>)"
            )
        self._reward = reward

    def decode(
        self, model: Any, tokenizer: Any, prompts: list[Any], prompt_ids: list[list[int]], settings: Any
    ) -> Decoded:
        from prefrun.evaluation.infalign import bon_kl, bon_win_rate

        source = self._reward()
        with Costs(model) as costs:
            drawn = self._sample(model, tokenizer, prompt_ids, dataclasses.replace(settings, n=self.n))
            scores = source.score(prompts, drawn.texts)  # [B, N], every prompt in one call
            costs.reward_calls += 1
            costs.reward_responses += scores.numel()
            index = best_index(scores, self.tie_break, self.seed)
        chosen = scores[torch.arange(len(prompts)), index]
        best = torch.nan_to_num(scores.double(), nan=-torch.inf).max(1, keepdim=True).values
        report = {
            **costs.per_response(len(prompts)),
            "n": float(self.n),
            "kl_bound": bon_kl(self.n),
            "win_rate_bound": bon_win_rate(self.n),
            "best_reward": float(chosen.nanmean()),
            "sample_reward": float(scores.nanmean()),
            "tie_rate": float(((scores.double() == best).sum(1) > 1).double().mean()),
        }
        if self.calibration:
            report.update(self._plugin(model, tokenizer, prompts, prompt_ids, settings, source, chosen))
        return Decoded(samples=pick(drawn, index), report=report)

    @staticmethod
    def _sample(model: Any, tokenizer: Any, prompt_ids: list[list[int]], settings: Any) -> Any:
        from prefrun.generation import sample

        return sample(model, tokenizer, prompt_ids, settings, stage=f"decode=bon: {settings.n} samples per prompt")

    def _plugin(
        self, model: Any, tokenizer: Any, prompts: list[Any], prompt_ids: list[list[int]], settings: Any, source: Any,
        chosen: torch.Tensor,
    ) -> dict[str, float]:  # fmt: skip
        """The plug-in KL and the calibrated reward of the chosen answers, against m fresh samples of π."""
        import numpy as np

        from prefrun.evaluation.infalign import bon_plugin_kl, calibrate

        fresh = dataclasses.replace(settings, n=self.calibration, seed=settings.seed + 1)
        reference = source.score(prompts, self._sample(model, tokenizer, prompt_ids, fresh).texts)
        c = calibrate(chosen.double().numpy(), reference.double().numpy())
        c = np.clip(c[~np.isnan(c)], 0.5 / self.calibration, 1.0)
        if not len(c):
            return {}
        return {"kl_plugin": bon_plugin_kl(c, self.n), "calibrated_reward": float(np.mean(c))}
