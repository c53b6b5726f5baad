"""Drawing train/val/test splits for data that has none, the same way for every dataset kind.

Items are ordered by a hash of (seed, the item's name), so a draw depends on the seed and the
names only, never on the order the files were listed in; then the ordered items are cut by the
fractions. Split folder and file names people use map to ours through `split_alias`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")

# Split folder and file names people use, -> ours.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def split_alias(name: str) -> str | None:
    return SPLIT_ALIASES.get(name.lower())


def hashed_order(items: Sequence[Item], name_of: Callable[[Item], str], seed: int) -> list[Item]:
    """The items sorted by sha256 of `"{seed}:{name}"`: a seeded order independent of listing."""
    return sorted(
        items, key=lambda item: hashlib.sha256(f"{seed}:{name_of(item)}".encode()).hexdigest()
    )


def draw_by_fraction(
    items: Sequence[Item], name_of: Callable[[Item], str], fractions: dict[str, float], seed: int
) -> dict[str, list[Item]]:
    """Cut the hashed order into the splits with a positive fraction, in `fractions` order;
    every such split gets at least one item when there are enough, rounding goes to the first."""
    ordered = hashed_order(items, name_of, seed)
    names = [name for name, share in fractions.items() if share > 0]
    total = sum(fractions[n] for n in names)
    counts = [round(len(ordered) * fractions[n] / total) for n in names]
    if len(ordered) >= len(names):
        counts = [max(1, c) for c in counts]
    while sum(counts) > len(ordered):  # rounding up: take back from the largest split
        counts[counts.index(max(counts))] -= 1
    counts[0] += len(ordered) - sum(counts)  # rounding down: the first split (train) keeps it
    out, start = {}, 0
    for name, count in zip(names, counts, strict=True):
        out[name] = ordered[start : start + count]
        start += count
    return out
