"""reward=python: a function by import path with TRL's reward signature, flattened and reshaped."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.rewards import RewardContext, build_reward

MODULE = """
calls = []

def length_reward(prompts, completions, scale=1.0, **kwargs):
    calls.append((list(prompts), list(completions), {"scale": scale, **kwargs}))
    out = []
    for c in completions:
        text = c[0]["content"] if isinstance(c, list) else c
        out.append(None if "?" in text else scale * len(text))
    return out

def wrong_length(prompts, completions, **kwargs):
    return [1.0]

def not_numbers(prompts, completions, **kwargs):
    return ["high"] * len(completions)

class Scorers:
    @staticmethod
    def first_char(prompts, completions, **kwargs):
        return [float(ord(c[0])) for c in completions]
"""


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    sys.modules.pop("my_rewards", None)
    return importlib.import_module("my_rewards")


def python_source(fn, **settings):
    return build_reward(OmegaConf.create({"name": "python", "fn": fn, **settings}), RewardContext())


def test_scores_are_the_function_values_reshaped(user_module, check_preferences):
    source = python_source("my_rewards:length_reward", kwargs={"scale": 2.0})
    prompts, lists = ["p0", "p1"], [["a", "bbb", "c?"], ["dd", "e", "ffff"]]
    scores = source.score(prompts, lists)
    assert scores.shape == (2, 3)
    assert scores[0, 0] == 2 and scores[0, 1] == 6 and scores[0, 2].isnan()
    assert scores[1].tolist() == [4.0, 2.0, 8.0]
    called_prompts, called_completions, kwargs = user_module.calls[-1]
    assert called_prompts == ["p0", "p0", "p0", "p1", "p1", "p1"] and called_completions[3] == "dd"
    assert kwargs == {"scale": 2.0} and len(user_module.calls) == 1  # one call per score()
    assert source.stats()["nan"] == 1
    p = source.prefer(prompts[1:], lists[1:])
    check_preferences(p, 1, 3)
    assert p[0, 0, 1].item() == pytest.approx(1 / (1 + math.exp(-(4.0 - 2.0))))


def test_chat_prompts_get_assistant_message_completions(user_module):
    chat = [{"role": "user", "content": "sort: 2 1 ->"}]
    scores = python_source("my_rewards:length_reward").score([chat], [[" 1 2", " 2 1 0"]])
    assert scores.tolist() == [[4.0, 6.0]]
    assert user_module.calls[-1][1][0] == [{"role": "assistant", "content": " 1 2"}]


def test_hard_preference_and_dotted_attributes(user_module):
    source = python_source("my_rewards:Scorers.first_char", preference="hard")
    p = source.prefer(["x"], [["a", "b", "a"]])
    assert torch.equal(p[0], torch.tensor([[0.5, 0.0, 0.5], [1.0, 0.5, 1.0], [0.5, 0.0, 0.5]]))


@pytest.mark.parametrize(
    "spec, says",
    [
        ("my_rewards", "not of the form module:function"),
        (None, "not of the form module:function"),
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("my_rewards:nothing_here", "has no function 'nothing_here'"),
    ],
)
def test_a_bad_path_names_reward_fn_and_the_expected_form(user_module, spec, says):
    with pytest.raises(PrefrunError) as e:
        python_source(spec)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"reward.fn={spec!r}") and says in message
    assert "reward.fn=<module>:<function>" in message


@pytest.mark.parametrize("fn, says", [("wrong_length", "returned 1 values for 2"), ("not_numbers", "'high'")])
def test_bad_return_values_are_one_line_errors(user_module, fn, says):
    with pytest.raises(PrefrunError, match=says):
        python_source(f"my_rewards:{fn}").score(["p"], [["a", "b"]])
