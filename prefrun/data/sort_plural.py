"""``dataset=sort_plural``: the sort task with users whose preferences differ by group (pluralistic data).

Users fall in G groups (``dataset.groups``, default 2, of sizes ``dataset.group_shares``). Group g wants
the prompt's numbers in its own target order and grades any answer by the sort oracle of that order
(``prefrun.data.synthetic.oracle_reward`` on the numbers relabelled by their rank in the order):

    group 0: ascending,   group 1: descending,   group 2: ascending after rotating the numbers by vocab/2, ...
    r_g(x, y) = 1 − inversions(rank_g(y)) / (n(n−1)/2)  for a permutation of the prompt's numbers, else 0

With two groups r_1 = 1 − r_0 on every valid answer, so the groups disagree on every comparison of two
valid answers: one reward for everyone (Bradley–Terry) can at best agree with the larger group, and its
per-user accuracy is capped at that group's share of the comparisons.

Each comparison is a new prompt with two candidates, each near one random group's target (that order with
0..max_swaps random adjacent swaps; malformed with probability ``corrupt_prob``), scored by the user's
group oracle; ties are redrawn. Every record carries its ``user`` and true ``group``:

    {"prompt": "sort: 12 5 7 ->", "responses": [" 5 7 12", " 12 7 5"], "scores": [1.0, 0.0],
     "user": "u03", "group": 0}

Seen users (``dataset.users``, ids u00, u01, ...) train on ``pairs_per_user`` comparisons each and are
evaluated on ``eval_pairs_per_user`` held-out ones; new users (``dataset.new_users``, ids n00, n01, ...)
never train the model: their ``pairs_per_user`` comparisons are the adaptation pool (``adapt_records``) and
their ``eval_pairs_per_user`` held-out ones test the adapted user. The SFT data is the sort task's, so the
cached SFT backbone is the one ``dataset=sort`` builds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from prefrun.data import synthetic
from prefrun.data.records import Record, make_record
from prefrun.errors import PrefrunError

TRAIN_SEED, ADAPT_SEED = 20_000, 30_000  # fixed streams: run seeds vary training, not the data


class PluralData:
    """The run data of sort_plural, read as ``prefrun.data.sources.RunData`` is (train, eval_records,
    eval_prompts, sft, words, reward_fn, strict_fns, held_out), plus the new users' adaptation pool and every
    user's true group and oracle. There is no single oracle (``reward_fn`` is None): each group has its own."""

    def __init__(
        self,
        train: list[Record],
        eval_records: list[Record],
        sft: list[Record],
        words: list[str],
        adapt_records: list[Record],
        groups: dict[str, int],
        n_groups: int,
        vocab: int,
    ) -> None:
        self.train, self.eval_records, self.sft, self.words = train, eval_records, sft, words
        self.eval_prompts = [r["prompt"] for r in eval_records]
        self.reward_fn = None
        self.strict_fns = {"valid_permutation": synthetic.is_valid_permutation}
        self.held_out = 0
        self.adapt_records = adapt_records  # the new users' comparisons to adapt from (never trained on)
        self.groups = groups  # every user's true group: seen and new
        self.n_groups, self.vocab = n_groups, vocab

    def user_reward(self, user: str, prompt: str, response: str) -> float:
        """User ``user``'s oracle reward of ``response``: its group's."""
        return group_reward(self.groups[user], self.n_groups, self.vocab, prompt, response)


def target_order(numbers: Sequence[int], group: int, n_groups: int, vocab: int) -> list[int]:
    """Group ``group``'s preferred order of ``numbers``: even groups ascending, odd descending, pairs of groups
    rotated by vocab / ⌈G/2⌉ (so two groups are ascending vs descending)."""
    offset = (group // 2) * vocab // max(1, -(-n_groups // 2))
    ordered = sorted(numbers, key=lambda n: (n - offset) % vocab)
    return ordered if group % 2 == 0 else ordered[::-1]


def group_reward(group: int, n_groups: int, vocab: int, prompt: str, response: str) -> float:
    """The sort oracle of the group's target order: numbers relabelled by their rank in that order."""
    if not synthetic.is_valid_permutation(prompt, response):
        return 0.0
    numbers = synthetic.parse_prompt(prompt)
    rank = {n: i for i, n in enumerate(target_order(numbers, group, n_groups, vocab))}
    relabelled = [rank[int(t)] for t in response.split()]
    return synthetic.oracle_reward(synthetic.format_prompt(sorted(relabelled)), synthetic.format_response(relabelled))


def user_groups(prefix: str, n_users: int, shares: Sequence[float]) -> dict[str, int]:
    """User id → group: the first ⌊share·n⌉ users in group 0, the next in group 1, ... (the last group takes
    the rest)."""
    counts = [round(s * n_users) for s in shares[:-1]]
    counts.append(n_users - sum(counts))
    groups: dict[str, int] = {}
    for g, c in enumerate(counts):
        for _ in range(max(0, c)):
            groups[f"{prefix}{len(groups):02d}"] = g
    return groups


def comparisons(task: synthetic.SortTask, cfg: Any, user: str, group: int, n: int, rng: random.Random) -> list[Record]:
    """``n`` untied comparisons of user ``user`` (of ``group``): two candidates per new prompt."""
    out: list[Record] = []
    while len(out) < n:
        numbers = task.sample_numbers(rng)
        prompt = synthetic.format_prompt(numbers)
        responses = []
        for _ in range(2):
            order = target_order(numbers, rng.randrange(cfg.groups), cfg.groups, task.vocab)
            perm = synthetic.noisy_sort(range(len(order)), rng.randint(0, cfg.max_swaps), rng)
            answer = [order[i] for i in perm]
            if rng.random() < cfg.corrupt_prob:
                answer = synthetic.corrupt(answer, task.vocab, rng)
            responses.append(synthetic.format_response(answer))
        scores = [group_reward(group, cfg.groups, task.vocab, prompt, r) for r in responses]
        if scores[0] != scores[1]:  # a tie compares nothing: draw another prompt
            out.append(make_record(prompt, responses, scores, user=user, group=group))
    return out


def check_plural(cfg: Any) -> None:
    shares = list(cfg.group_shares)
    if len(shares) != cfg.groups or any(not isinstance(s, int | float) or s <= 0 for s in shares):
        raise PrefrunError(
            f"dataset.group_shares={shares} must hold dataset.groups={cfg.groups} positive shares, e.g. "
            f"dataset.group_shares=[{', '.join(['0.5'] * int(cfg.groups))}]"
        )
    if cfg.users < cfg.groups:
        raise PrefrunError(f"dataset.users={cfg.users} is below dataset.groups={cfg.groups}: every group needs a user")


def plural_data(cfg: Any, eval_seed: int) -> PluralData:
    """The sort_plural run data (conf/dataset/sort_plural.yaml); ``eval_seed``: the held-out split's stream."""
    check_plural(cfg)
    task = synthetic.SortTask(min_len=cfg.min_len, max_len=cfg.max_len, vocab=cfg.vocab)
    shares = [float(s) / sum(cfg.group_shares) for s in cfg.group_shares]
    seen = user_groups("u", int(cfg.users), shares)
    new = user_groups("n", int(cfg.new_users), shares)

    # one stream per (split, user), so adding users or comparisons leaves the others' data as it was
    def stream(base: int, i: int) -> random.Random:
        return random.Random(base + 1_000 * i)

    train = [
        r
        for i, (u, g) in enumerate(seen.items())
        for r in comparisons(task, cfg, u, g, int(cfg.pairs_per_user), stream(TRAIN_SEED, i))
    ]
    adapt = [
        r
        for i, (u, g) in enumerate(new.items())
        for r in comparisons(task, cfg, u, g, int(cfg.pairs_per_user), stream(ADAPT_SEED, i))
    ]
    held_out = [
        r
        for i, (u, g) in enumerate({**seen, **new}.items())
        for r in comparisons(task, cfg, u, g, int(cfg.eval_pairs_per_user), stream(eval_seed, i))
    ]
    return PluralData(
        train=train,
        eval_records=held_out,
        sft=synthetic.sft_records(task, cfg.sft_records, cfg.sft_max_swaps, seed=0),  # the sort task's SFT data
        words=task.words(),
        adapt_records=adapt,
        groups={**seen, **new},
        n_groups=int(cfg.groups),
        vocab=int(cfg.vocab),
    )
