"""The synthetic ``sort`` task: sort a list of numbers; a deterministic graded oracle scores any answer.

    prompt:   "sort: 12 5 7 ->"
    response: " 5 7 12"                       (the tokenizer appends EOS)
    reward:   1 − inversions / (n(n−1)/2) for a permutation of the prompt's numbers, else 0

The reward is graded (one adjacent swap costs 1/(n(n−1)/2)), so K responses per prompt can be
ranked; malformed answers (a number added, dropped or changed, or non-numbers) score 0.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from prefrun.data.records import Record, make_record

PROMPT_PREFIX = "sort:"
PROMPT_SUFFIX = "->"


@dataclass(frozen=True)
class SortTask:
    """Task parameters (conf/dataset/sort.yaml)."""

    min_len: int = 5
    max_len: int = 8
    vocab: int = 30  # numbers are 0 .. vocab-1

    def words(self) -> list[str]:
        """The task's alphabet, for the tiny model's tokenizer."""
        return [PROMPT_PREFIX, PROMPT_SUFFIX, *(str(i) for i in range(self.vocab))]

    def sample_numbers(self, rng: random.Random) -> list[int]:
        return rng.sample(range(self.vocab), rng.randint(self.min_len, self.max_len))


def format_prompt(numbers: Sequence[int]) -> str:
    return " ".join([PROMPT_PREFIX, *map(str, numbers), PROMPT_SUFFIX])


def format_response(numbers: Sequence[int]) -> str:
    return "".join(f" {n}" for n in numbers)


def parse_prompt(prompt: str) -> list[int]:
    return [int(t) for t in prompt.split()[1:-1]]


def oracle_reward(prompt: str, response: str) -> float:
    """Reward in [0, 1]: 1 − normalised inversion count if ``response`` permutes the prompt's numbers, else 0."""
    target = parse_prompt(prompt)
    try:
        answer = [int(t) for t in response.split()]
    except ValueError:
        return 0.0
    if sorted(answer) != sorted(target):
        return 0.0
    n = len(answer)
    inversions = sum(answer[i] > answer[j] for i in range(n) for j in range(i + 1, n))
    return 1.0 - inversions / (n * (n - 1) / 2)


def is_sorted_exactly(prompt: str, response: str) -> bool:
    return oracle_reward(prompt, response) == 1.0


def is_valid_permutation(prompt: str, response: str) -> bool:
    try:
        return sorted(int(t) for t in response.split()) == sorted(parse_prompt(prompt))
    except ValueError:
        return False


def noisy_sort(numbers: Sequence[int], swaps: int, rng: random.Random) -> list[int]:
    """The sorted list with ``swaps`` random adjacent swaps applied."""
    out = sorted(numbers)
    for _ in range(swaps):
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def corrupt(numbers: Sequence[int], vocab: int, rng: random.Random) -> list[int]:
    """A malformed answer: one number dropped, duplicated or replaced by one absent from the prompt."""
    out = list(numbers)
    i = rng.randrange(len(out))
    kind = rng.choice(["drop", "duplicate", "replace"])
    if kind == "drop":
        del out[i]
    elif kind == "duplicate":
        out.insert(i, out[i])
    else:
        out[i] = rng.choice([n for n in range(vocab) if n not in numbers])
    return out


def sft_records(task: SortTask, n: int, max_swaps: int, seed: int) -> list[Record]:
    """SFT data: one response per prompt, the sorted list with 0..max_swaps random adjacent swaps."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        nums = task.sample_numbers(rng)
        resp = format_response(noisy_sort(nums, rng.randint(0, max_swaps), rng))
        prompt = format_prompt(nums)
        records.append(make_record(prompt, [resp], [oracle_reward(prompt, resp)]))
    return records


def preference_records(task: SortTask, n: int, k: int, max_swaps: int, corrupt_prob: float, seed: int) -> list[Record]:
    """Preference data: K scored responses per prompt with a spread of quality.

    Each response is the sorted list with 0..max_swaps adjacent swaps, malformed with probability
    ``corrupt_prob``; its score is the oracle reward.
    """
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        nums = task.sample_numbers(rng)
        prompt = format_prompt(nums)
        responses = []
        for _ in range(k):
            answer = noisy_sort(nums, rng.randint(0, max_swaps), rng)
            if rng.random() < corrupt_prob:
                answer = corrupt(answer, task.vocab, rng)
            responses.append(format_response(answer))
        records.append(make_record(prompt, responses, [oracle_reward(prompt, r) for r in responses]))
    return records


def eval_prompts(task: SortTask, n: int, seed: int) -> list[str]:
    """Held-out prompts (a seed stream disjoint from training's by construction of the caller's seeds)."""
    rng = random.Random(seed)
    return [format_prompt(task.sample_numbers(rng)) for _ in range(n)]
