"""The one log-prob routine: summed log π(y | x) of each response, as a log-softmax over the full logits gives it."""

from __future__ import annotations

import torch

from prefrun.data.collator import ListCollator
from prefrun.data.shared_prompt import SharedPromptCollator
from prefrun.lm.logprobs import response_logps, score_rows

RECORDS = [
    {"prompt_ids": [5, 6, 7], "response_ids": [[8, 9, 2], [10, 2]], "scores": [1.0, 0.0]},
    {"prompt_ids": [11, 12], "response_ids": [[13, 14, 15, 2], [16, 2], [17, 18, 2]], "scores": [0.0, 1.0, 0.5]},
]


def by_hand(model, prompt: list[int], response: list[int]) -> float:
    """Σ_t log softmax(logits_{t-1})[y_t] over the response tokens, from one unpadded forward."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(prompt) + i - 1, tok]) for i, tok in enumerate(response))


def test_summed_logps_and_counts_equal_a_full_log_softmax(micro_model):
    model, _ = micro_model
    model.eval()
    batch = ListCollator(pad_token_id=0)(RECORDS)
    with torch.no_grad():
        sums, counts = response_logps(model, batch)
    expected = [by_hand(model, r["prompt_ids"], resp) for r in RECORDS for resp in r["response_ids"]]
    assert counts.tolist() == [len(resp) for r in RECORDS for resp in r["response_ids"]]
    assert torch.allclose(sums.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-4)


def test_the_shared_prompt_layout_gives_the_same_numbers(micro_model):
    model, _ = micro_model
    model.eval()
    with torch.no_grad():
        unshared, n1 = response_logps(model, ListCollator(pad_token_id=0)(RECORDS))
        shared, n2 = response_logps(model, SharedPromptCollator(pad_token_id=0)(RECORDS))
    assert n1.tolist() == n2.tolist()
    assert torch.allclose(unshared, shared, atol=1e-4)


def test_gradients_flow_when_enabled(micro_model):
    model, _ = micro_model
    sums, _ = response_logps(model, ListCollator(pad_token_id=0)(RECORDS))
    sums.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_score_rows_returns_one_list_per_row_batching_aside(micro_model):
    model, _ = micro_model
    model.eval()
    one, counts = score_rows(model, RECORDS, batch_size=1)
    both, _ = score_rows(model, RECORDS, batch_size=2)
    assert [len(r) for r in one] == [2, 3] and counts == [[3, 2], [4, 2, 3]]
    for a, b in zip(one, both):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)
    assert abs(one[1][2] - by_hand(model, [11, 12], [17, 18, 2])) < 1e-4
