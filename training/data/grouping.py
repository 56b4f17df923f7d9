"""Grouping kept frames into story sequences, and picking each sequence's reference frame.

Lay2Story groups frames (in time order) into sequences of 4, 5 or 6 frames with probabilities 50/30/20%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_LENGTHS", "DEFAULT_PROBS", "check_length_probs", "group_frames", "group_lengths",
           "pick_reference"]

DEFAULT_LENGTHS = (4, 5, 6)
DEFAULT_PROBS = (0.5, 0.3, 0.2)


def check_length_probs(lengths: Sequence[int], probs: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Validated ``(lengths, probs)``: positive distinct integers and non-negative weights summing to 1."""
    lengths = tuple(lengths)
    probs = tuple(probs)
    if not lengths or len(lengths) != len(probs):
        raise ValueError(f"lengths/probs: expected two sequences of the same non-zero length, got {lengths!r} "
                         f"and {probs!r}")
    for value in lengths:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"lengths: expected positive integers, got {value!r}")
    if len(set(lengths)) != len(lengths):
        raise ValueError(f"lengths: expected distinct values, got {lengths!r}")
    for value in probs:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"probs: expected non-negative numbers, got {value!r}")
    if not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
        raise ValueError(f"probs: must sum to 1, got {probs!r} (sum {sum(probs)})")
    return tuple(int(v) for v in lengths), tuple(float(v) for v in probs)


def group_lengths(n: int, rng: np.random.Generator, lengths: Sequence[int] = DEFAULT_LENGTHS,
                  probs: Sequence[float] = DEFAULT_PROBS) -> list[int]:
    """Sequence lengths covering (a prefix of) ``n`` frames: each drawn from ``lengths`` with ``probs``; when the
    draw is longer than what is left, the longest length that still fits is used; a tail shorter than the shortest
    length is left over."""
    lengths, probs = check_length_probs(lengths, probs)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected a non-negative integer, got {n!r}")
    out: list[int] = []
    left = int(n)
    while left >= min(lengths):
        length = lengths[int(rng.choice(len(lengths), p=probs))]
        if length > left:
            length = max(v for v in lengths if v <= left)
        out.append(length)
        left -= length
    return out


def group_frames(indices: Sequence[int], rng: np.random.Generator, lengths: Sequence[int] = DEFAULT_LENGTHS,
                 probs: Sequence[float] = DEFAULT_PROBS) -> list[list[int]]:
    """``indices`` (already in time order) cut into consecutive sequences with :func:`group_lengths`."""
    indices = list(indices)
    groups = []
    start = 0
    for length in group_lengths(len(indices), rng, lengths, probs):
        groups.append(indices[start:start + length])
        start += length
    return groups


def pick_reference(sequence: Sequence[int], candidates: Sequence[int], times: Sequence[float]) -> int | None:
    """The candidate frame (not in ``sequence``) nearest in time to the sequence, earlier one on ties; ``None`` when
    there is none. ``times[i]`` is the time of frame ``i``; the reference then most likely shows the character in
    the same scene but is not one of the frames to generate."""
    members = set(sequence)
    others = [c for c in candidates if c not in members]
    if not others or not members:
        return None
    lo = min(times[i] for i in members)
    hi = max(times[i] for i in members)

    def distance(c: int) -> tuple[float, float]:
        t = times[c]
        return (lo - t if t < lo else t - hi if t > hi else 0.0, t)

    return min(others, key=distance)
