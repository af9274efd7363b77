"""The PAL head: its scores by hand, the mean mixture, new users, saving and loading, and the backbone's embeddings."""

from __future__ import annotations

import pytest
import torch

from prefrun.errors import PrefrunError
from prefrun.models.pal import PALConfig, PALHead, embed, load_pal, save_pal


def head(**kw) -> PALHead:
    torch.manual_seed(0)
    return PALHead(PALConfig(hidden_size=10, dim=6, **kw), ["u0", "u1", "u2"])


def test_pal_a_scores_by_distance_to_the_users_ideal_point():
    h = head(user_point="ideal", similarity="distance", prototypes=2)
    prompt, items = torch.randn(3, 10), torch.randn(3, 2, 10)
    out = h(prompt, items, h.user_indices(["u0", "u1", "u2"]))
    for b in range(3):
        w = torch.softmax(h.W[b], dim=0)
        a_u = h.f(w @ h.prototypes)  # a_u = f(Σ_k w_k p_k): no prompt
        for k in range(2):
            assert out["rewards"][b, k].item() == pytest.approx(-torch.dist(h.f(items[b, k]), a_u).item(), rel=1e-5)
        assert out["ideal_norms"][b].item() == pytest.approx(a_u.norm().item(), rel=1e-5)


def test_pal_b_scores_by_cosine_to_a_prompt_conditioned_user_point():
    h = head(user_point="prompt", similarity="cosine", prototypes=3)
    prompt, items = torch.randn(2, 10), torch.randn(2, 2, 10)
    out = h(prompt, items, h.user_indices(["u2", "u0"]))
    for b, u in enumerate([2, 0]):
        w = torch.softmax(h.W[u], dim=0)
        a = sum(w[k] * h.g[k](prompt[b]) for k in range(3))
        for k in range(2):
            expected = (1 / 0.07) * torch.cosine_similarity(h.f(items[b, k]), a, dim=0)
            assert out["rewards"][b, k].item() == pytest.approx(expected.item(), rel=1e-4)


def test_no_user_scores_with_the_mean_mixture_of_the_table():
    h = head(prototypes=2)
    prompt, items = torch.randn(1, 10), torch.randn(1, 2, 10)
    mean = torch.softmax(h.W, dim=-1).mean(dim=0, keepdim=True)
    assert torch.allclose(
        h(prompt, items, h.user_indices([None]))["rewards"], h(prompt, items, None, weights=mean)["rewards"]
    )
    with pytest.raises(PrefrunError, match="user 'zz' is not in the PAL model's user table"):
        h.user_indices(["zz"])


def test_saved_head_loads_with_its_users_and_refuses_a_backbone_of_another_width(tmp_path):
    h = head(prototypes=2)
    h.add_users(["new"], torch.tensor([[3.0, -3.0]]))
    save_pal(h, tmp_path / "model", {"path": "/somewhere", "hidden_size": 10}, {"objective": "pal_b"})
    loaded, meta = load_pal(tmp_path / "model", "reward.path", hidden_size=10)
    assert loaded.users == ["u0", "u1", "u2", "new"] and meta["objective"] == "pal_b"
    prompt, items = torch.randn(2, 10), torch.randn(2, 2, 10)
    index = h.user_indices(["new", "u1"])
    assert torch.equal(loaded(prompt, items, index)["rewards"], h.eval()(prompt, items, index)["rewards"])
    with pytest.raises(PrefrunError) as e:
        load_pal(tmp_path / "model", "reward.path='x'", hidden_size=32)
    assert str(e.value) == (
        "reward.path='x': the saved PAL head reads 10-wide embeddings but the backbone /somewhere has hidden size 32; "
        "use the backbone it was trained on (/somewhere) or train a new PAL"
    )


def test_embeddings_are_the_backbones_hidden_states_at_the_prompts_and_the_sequences_last_token(micro_model_dir):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(micro_model_dir).eval()
    rows = [
        {"prompt_ids": [3, 4, 5], "response_ids": [[6, 2], [7, 8, 9, 2]]},
        {"prompt_ids": [4], "response_ids": [[5, 2]]},
    ]
    prompt, items, mask = embed(encoder, rows, pad_token_id=0, batch_size=1)
    assert mask.tolist() == [[True, True], [True, False]]
    with torch.no_grad():
        alone = encoder(input_ids=torch.tensor([[3, 4, 5]])).last_hidden_state[0, -1]
        full = encoder(input_ids=torch.tensor([[3, 4, 5, 7, 8, 9, 2]])).last_hidden_state[0, -1]
    assert torch.allclose(prompt[0], alone, atol=1e-5) and torch.allclose(items[0, 1], full, atol=1e-5)
    again, items2, _ = embed(encoder, rows, pad_token_id=0, batch_size=2)  # padding does not change them
    assert torch.allclose(again, prompt, atol=1e-5) and torch.allclose(items2, items, atol=1e-5)
