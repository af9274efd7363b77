"""Under DDP the logged metrics are the whole batch's: the ranks' shares gathered, lists of unequal K padded.

Two ranks are simulated by an accelerator that behaves as accelerate's does for rank 0 of 2 (pad_across_processes
pads dim 1 of every tensor with zeros to the longest over the ranks; gather concatenates along dim 0 in rank
order); the expected metrics are the objective's on the unsplit batch. The real 2-process check is tests/test_ddp.py.
"""

from __future__ import annotations

import pytest
import torch

from prefrun.objectives import get_objective
from prefrun.trainers.list_trainer import whole_batch_metrics


class RankZeroOfTwo:
    """accelerate's pad_across_processes / gather, seen from rank 0, with rank 1's tensors given."""

    num_processes = 2

    def __init__(self, rank1: dict[str, torch.Tensor]):
        self.rank1 = rank1

    @staticmethod
    def _pad(t: torch.Tensor, size: int) -> torch.Tensor:
        if t.dim() < 2 or t.shape[1] == size:
            return t
        return torch.cat([t, t.new_zeros((t.shape[0], size - t.shape[1], *t.shape[2:]))], dim=1)

    def pad_across_processes(self, tensors: dict, dim: int = 0) -> dict:
        assert dim == 1
        width = {n: max(t.shape[1], self.rank1[n].shape[1]) for n, t in tensors.items() if t.dim() >= 2}
        self.rank1 = {n: self._pad(t, width.get(n, 0)) if t.dim() >= 2 else t for n, t in self.rank1.items()}
        return {n: self._pad(t, width[n]) if t.dim() >= 2 else t for n, t in tensors.items()}

    def gather(self, tensors: dict) -> dict:
        assert all(t.dtype != torch.bool for t in tensors.values()), "gloo gathers no bool tensors"
        return {n: torch.cat([t, self.rank1[n].to(t.dtype)]) for n, t in tensors.items()}


def lists(rows: list[list[tuple[float, float, float]]]) -> dict[str, torch.Tensor]:
    """(policy log-prob, reference log-prob, score) per response of each list, padded to the longest list."""
    k = max(map(len, rows))
    pad = [(0.0, 0.0, 0.0)] * k
    cols = torch.tensor([(row + pad)[:k] for row in rows])
    return {
        "policy_logps": cols[..., 0],
        "ref_logps": cols[..., 1],
        "scores": cols[..., 2],
        "mask": torch.tensor([[i < len(row) for i in range(k)] for row in rows]),
        "lengths": torch.full((len(rows), k), 5.0),
    }


RANK0 = [  # lists of 4 and 3 responses
    [(-10.0, -11.0, 3.0), (-12.0, -12.5, 2.0), (-9.0, -8.0, 1.0), (-14.0, -13.0, 0.0)],
    [(-7.0, -7.5, 0.5), (-8.0, -7.0, 0.2), (-6.0, -6.1, 0.9)],
]
RANK1 = [  # pairs only: this rank's batch is padded to K = 2
    [(-5.0, -5.5, 1.0), (-6.0, -5.0, 0.0)],
    [(-20.0, -19.0, 0.3), (-18.0, -18.2, 0.7)],
]


@pytest.mark.parametrize("name", ["lipo", "listmle", "dpo"])
def test_lists_of_unequal_length_on_two_ranks_log_the_whole_batchs_metrics(name):
    objective = get_objective(name)
    data = (RANK0 + RANK1) if name != "dpo" else [row[:2] for row in RANK0 + RANK1]
    rank0, rank1 = lists(data[:2]), lists(data[2:])
    whole = lists(data)
    expected = objective(
        whole["policy_logps"], whole["ref_logps"], whole["scores"], mask=whole["mask"], lengths=whole["lengths"]
    ).metrics
    got = whole_batch_metrics(objective, RankZeroOfTwo(rank1), rank0, reduced={})
    assert got == pytest.approx(expected, abs=1e-6)
    own = objective(**{k: rank0[k] for k in ("policy_logps", "ref_logps", "scores")}, mask=rank0["mask"]).metrics
    assert own["logps/chosen"] != pytest.approx(expected["logps/chosen"])  # rank 0's half is not the batch


def test_kto_counts_desirable_examples_over_both_ranks():
    """Rank 0 holds 3 desirable examples of 4, rank 1 holds 1: a mean of the ranks' means would weigh them 1:1."""
    objective = get_objective("kto")
    logps = torch.tensor([[-3.0], [-4.0], [-5.0], [-6.0], [-2.0], [-7.0], [-8.0], [-9.0]])
    ref = logps + torch.tensor([[0.5], [-0.2], [0.1], [0.3], [-0.4], [0.2], [0.6], [-0.1]])
    labels = torch.tensor([[True], [True], [True], [False], [True], [False], [False], [False]])
    kl = torch.tensor([0.2, -0.1, 0.05, 0.3, 0.1, 0.0, -0.2, 0.4])  # already gathered over ranks by the trainer

    def batch(rows: slice) -> dict[str, torch.Tensor]:
        return {
            "policy_logps": logps[rows],
            "ref_logps": ref[rows],
            "scores": labels[rows].float(),
            "mask": torch.ones_like(labels[rows]),
            "lengths": torch.ones_like(logps[rows]),
            "labels": labels[rows],
        }

    whole = batch(slice(None))
    expected = objective(
        whole.pop("policy_logps"), whole.pop("ref_logps"), whole.pop("scores"), **whole, kl_logratios=kl
    ).metrics
    got = whole_batch_metrics(objective, RankZeroOfTwo(batch(slice(4, 8))), batch(slice(0, 4)), {"kl_logratios": kl})
    assert got == pytest.approx(expected, abs=1e-6)
