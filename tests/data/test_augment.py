"""Reward-augmented pairs: two per pair, the lower goal prefers the worse response."""

from __future__ import annotations

from prefrun.data.augment import goal_text, reward_conditioned

# The goal prompt of Reward-augmented DPO (Zhang et al. 2024), written out so the test pins its wording.
GOAL = (
    "You are an assistant that generates responses to the instruction, implicitly achieving the following target "
    "scores (on a scale of 1-10, where a higher score is better): Overall score: {}."
)

CHAT = [{"role": "user", "content": "Name a prime."}]


def test_each_pair_becomes_two_goal_conditioned_pairs():
    out = reward_conditioned([{"prompt": CHAT, "responses": ["7", "8"], "scores": [9.0, 3.5]}])
    assert [r["responses"] for r in out] == [["7", "8"], ["8", "7"]]
    assert all(r["scores"] == [1.0, 0.0] for r in out)
    assert out[0]["prompt"][0] == {"role": "system", "content": GOAL.format(9)}
    assert out[1]["prompt"][0]["content"].endswith("Overall score: 3.5.")
    assert out[0]["prompt"][1:] == CHAT


def test_whole_scores_print_without_a_decimal():
    assert goal_text(9.0) == GOAL.format(9)


def test_no_system_role_puts_the_goal_in_the_first_user_turn():
    out = reward_conditioned([{"prompt": CHAT, "responses": ["7", "8"], "scores": [9.0, 3.0]}], system_role=False)
    assert [m["role"] for m in out[0]["prompt"]] == ["user"]
    assert out[0]["prompt"][0]["content"] == f"{GOAL.format(9)}\n\nName a prime."


def test_text_prompts_get_the_goal_as_a_prefix_and_reversed_pairs_are_dropped():
    out = reward_conditioned(
        [
            {"prompt": "Q:", "responses": ["a", "b"], "scores": [2.0, 1.0]},
            {"prompt": "Q:", "responses": ["a", "b"], "scores": [1.0, 2.0]},
        ]
    )
    assert len(out) == 2 and out[0]["prompt"] == f"{GOAL.format(2)}\n\nQ:"
