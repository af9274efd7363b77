"""Joint preferences: comparing responses to different prompts (DOVE, Bansal et al. 2024, arXiv 2404.00530).

The list holds K = 2 (prompt, response) pairs that may answer different prompts. Registered with
``joint=True``: the trainer scores the prompt tokens too, so ``policy_logps`` and ``ref_logps`` are
joint log-probs ℓ(x, y) = log π(x) + log π(y | x), each sequence starting at BOS.
"""

from __future__ import annotations

from prefrun.objectives.pairwise import dpo
from prefrun.objectives.registry import ObjectiveOutput, register


@register("jpo", data="pairwise", needs_reference=True, joint=True)
def jpo(policy_logps, ref_logps, scores, mask, lengths, *, beta: float = 0.1) -> ObjectiveOutput:
    """DOVE, joint preference optimisation (Bansal et al. 2024, "Comparing Bad Apples to Good Oranges",
    arXiv 2404.00530; reference code Hritikbansal/dove, ``joint_distribution=True``):

    L = −log σ(β·[(ℓ_θ(x_w, y_w) − ℓ_ref(x_w, y_w)) − (ℓ_θ(x_l, y_l) − ℓ_ref(x_l, y_l))]),

    DPO's loss over joint log-probs of (prompt, response) sequences whose prompts may differ. With one
    prompt for both responses, log π(x) cancels and it equals DPO. Log-ratios are summed, so a longer
    prompt weighs more in the margin (a length effect the paper flags). β = 0.1 as in the reference code.
    """
    return dpo(policy_logps, ref_logps, scores, mask, lengths, beta=beta)  # the loss is DPO's; the inputs differ
