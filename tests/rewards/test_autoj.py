"""Auto-J's prompts (verbatim) and verdict parsers, on canned judge outputs covering every branch."""

from __future__ import annotations

import pytest

from prefrun.rewards.autoj import llama2_wrapper, pairwise_prompt, parse_pairwise, parse_single, single_prompt

# Auto-J's codes/usage/constants_prompt.py, as released (GAIR-NLP/auto-j), filled with "Q", "A", "B".
AUTOJ_SINGLE = (
    "Write critiques for a submitted response on a given user's query, and grade the response:\n  \n"
    "[BEGIN DATA]\n***\n[Query]: Q\n***\n[Response]: A\n***\n[END DATA]\n\n"
    "Write critiques for this response. After that, you should give a final rating for the response on a scale of "
    '1 to 10 by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".'
)
AUTOJ_PAIRWISE = (
    "You are assessing two submitted responses on a given user's query and judging which response is better or "
    "they are tied. Here is the data:\n\n[BEGIN DATA]\n***\n[Query]: Q\n***\n[Response 1]: A\n***\n"
    "[Response 2]: B\n***\n[END DATA]\n\nHere are the instructions to assess and compare the two responses:\n\n"
    "1. Pinpoint the key factors to distinguish these two responses.\n"
    "2. Conclude your comparison by providing a final decision on which response is better, or they are tied. "
    'Begin your final decision statement with "So, the final decision is Response 1 / Response 2 / Tie". '
    "Ensure that your decision aligns coherently with the comprehensive evaluation and comparison you've provided."
)


def test_prompts_are_auto_js_own_text():
    assert single_prompt("Q", "A") == AUTOJ_SINGLE
    assert pairwise_prompt("Q", "A", "B") == AUTOJ_PAIRWISE
    assert llama2_wrapper("hi") == "[INST] hi [/INST]"


def test_a_chat_prompt_becomes_role_lines_in_the_query():
    chat = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "?"},
    ]
    assert "[Query]: user: hello\nassistant: hi\nuser: ?\n***" in single_prompt(chat, "A")


@pytest.mark.parametrize(
    "output, verdict",
    [
        ("Response 1 is accurate.\n\nSo, the final decision is Response 1.", "first"),
        ("...So, the final decision is Response 2. Response 2 is correct.", "second"),
        ("Both are fine. So, the final decision is Tie.", "tie"),
        ("so, the final decision is   RESPONSE 1 ", "first"),  # what follows is stripped and lower-cased
        ("the final decision is Response 1 ... wait, the final decision is Response 2", "second"),  # the last one
        ("So, the final decision is unclear.", None),  # found, but neither response nor tie
        ("Response 1 is better.", None),  # no decision statement
        ("So, the Final Decision is Response 1", None),  # Auto-J matches 'final decision is ' case-sensitively
        ("", None),
    ],
)
def test_pairwise_parser(output, verdict):
    assert parse_pairwise(output) == verdict


@pytest.mark.parametrize(
    "output, rating",
    [
        ("The response is correct.\nRating: [[8]]", 8.0),
        ("Rating: [[3]] at first, but on reflection Rating: [[6.5]]", 6.5),  # the last one
        ("Rating: [[ 7 ]]", 7.0),
        ("Rating: [[seven]]", None),  # not a number: unparsed, where Auto-J's parser would crash
        ("Rating: [[7", None),  # unterminated
        ("I would rate it 9/10.", None),  # absent: unparsed, where Auto-J returns 0.0
        ("", None),
    ],
)
def test_single_parser(output, rating):
    assert parse_single(output) == rating
