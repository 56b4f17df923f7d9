"""Sequences of 4/5/6 frames (50/30/20%) and reference picking."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.grouping import group_frames, group_lengths, pick_reference


def test_length_proportions_match_the_paper():
    rng = np.random.default_rng(0)
    lengths = group_lengths(60_000, rng)
    n = len(lengths)
    assert n > 10_000
    for length, p in ((4, 0.5), (5, 0.3), (6, 0.2)):
        share = lengths.count(length) / n
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(share - p) < 4 * sigma + 1 / n, (length, share)


def test_custom_proportions():
    lengths = group_lengths(20_000, np.random.default_rng(1), lengths=(2, 3), probs=(0.9, 0.1))
    assert abs(lengths.count(2) / len(lengths) - 0.9) < 0.02


def test_groups_cover_a_prefix_in_order():
    for n in range(0, 40):
        rng = np.random.default_rng(n)
        groups = group_frames(list(range(100, 100 + n)), rng)
        flat = [i for g in groups for i in g]
        assert flat == list(range(100, 100 + len(flat)))  # consecutive, time order, no frame twice
        assert all(len(g) in (4, 5, 6) for g in groups)
        assert n - len(flat) < 4  # only a tail shorter than 4 frames is left over
    assert group_frames([1, 2, 3], np.random.default_rng(0)) == []
    assert group_frames([1, 2, 3, 4], np.random.default_rng(0)) == [[1, 2, 3, 4]]


def test_seeded():
    a = group_lengths(500, np.random.default_rng(7))
    assert a == group_lengths(500, np.random.default_rng(7))
    assert a != group_lengths(500, np.random.default_rng(8))


def test_pick_reference_is_the_nearest_other_frame():
    times = [0, 4, 8, 12, 16, 20, 24, 28, 100]
    assert pick_reference([2, 3, 4, 5], range(9), times) == 1  # frames 1 and 6 are both 4 s away: the earlier
    assert pick_reference([0, 1, 2, 3], range(9), times) == 4
    assert pick_reference([1, 2, 3, 4], [0, 1, 2, 3, 4, 5], times) == 0  # tie 0/5 (4 s each): the earlier
    assert pick_reference([0, 1, 2, 3], [0, 1, 2, 3], times) is None
    assert pick_reference([4, 5, 6, 7], [8], times) == 8


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="sum to 1"):
        group_lengths(10, rng, probs=(0.5, 0.3, 0.3))
    with pytest.raises(ValueError, match="same non-zero length"):
        group_lengths(10, rng, lengths=(4, 5), probs=(1.0,))
    with pytest.raises(ValueError, match="distinct"):
        group_lengths(10, rng, lengths=(4, 4), probs=(0.5, 0.5))
    with pytest.raises(ValueError, match="n:"):
        group_lengths(-1, rng)
