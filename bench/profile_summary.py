"""Summarise a py-spy collapsed-stack profile (`py-spy record --format raw`, as bench/stream.py --profile writes it).

    python bench/profile_summary.py bench/results/stream_profile.txt [--top 25]

Prints, as Markdown, the share of samples spent inside (inclusive) the functions that matter for the
worker, then the functions with the most samples of their own.
"""

from __future__ import annotations

import argparse
from collections import Counter

# (label, substring of a frame "function (file:line)"): inclusive share of samples in each
PHASES = [
    ("user batch (process_user_batch)", "Runtime.process_user_batch"),
    ("  top-N (recommend_many)", "FoldInService.recommend_many"),
    ("  user fold-in", "FoldInService.fold_in_users"),
    ("  bootstrap of ids known to the artifact", "FoldInService.initial_state"),
    ("item batch (process_item_batch)", "Runtime.process_item_batch"),
    ("  item fold-in", "FoldInService.fold_in_items"),
    ("Recommender.fold_in (both sides)", "Recommender.fold_in"),
    ("JSON encoding (json/orjson dumps)", "dumps ("),
    ("JSON decoding", "loads ("),
    ("table reads/writes (Faust tables)", "ManagedUserDict."),
    ("producing (Topic.send / aiokafka send)", "Topic.send"),
    ("aiokafka client I/O (sender, socket writes)", "AIOKafkaClient.send"),
    ("catalogue sync consumer", "Runtime.sync_catalogue"),
    ("event loop idle (select)", "EpollSelector.select"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path")
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    stacks = list(_stacks(args.path))
    total, own = 0, Counter()
    for frames, n in stacks:
        total += n
        own[frames[-1]] += n
    print(f"{total} samples\n\n| where | share of samples |\n|---|---|")
    for label, needle in PHASES:
        n = sum(c for stack_n, c in stacks if any(needle in f for f in stack_n))
        print(f"| {label} | {100 * n / total:.1f}% |")
    print("\n| function (own samples) | share |\n|---|---|")
    for f, n in own.most_common(args.top):
        print(f"| `{f}` | {100 * n / total:.1f}% |")


def _stacks(path: str):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip()
            if line:
                stack, n = line.rsplit(" ", 1)
                yield stack.split(";"), int(n)


if __name__ == "__main__":
    main()
