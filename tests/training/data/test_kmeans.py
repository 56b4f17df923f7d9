"""Seeded k-means and the windowed near-duplicate removal."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.kmeans import dedup_windows, kmeans


def _blobs(centres, per, spread=0.01, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, dtype=np.float64)
    x = np.concatenate([c + spread * rng.standard_normal((per, centres.shape[1])) for c in centres])
    return x, np.repeat(np.arange(len(centres)), per)


def test_recovers_separated_clusters():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((5, 8)) * 5
    x, truth = _blobs(centres, 20)
    result = kmeans(x, 5, seed=3)
    # Same partition up to relabelling: each true cluster maps to exactly one found cluster.
    mapping = {t: set(result.labels[truth == t]) for t in range(5)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == 5
    assert result.inertia < 20 * 5 * 8 * 0.01**2 * 3
    assert result.centres.shape == (5, 8)


def test_seeded_and_deterministic():
    x = np.random.default_rng(0).standard_normal((60, 4))
    a, b = kmeans(x, 6, seed=11), kmeans(x, 6, seed=11)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centres, b.centres)
    others = [kmeans(x, 6, seed=s).inertia for s in range(8)]
    assert len({round(v, 9) for v in others}) > 1  # the seed does matter on unstructured data


def test_fewer_distinct_points_than_k():
    x = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct points, 12 rows
    result = kmeans(x, 8, seed=0)
    assert result.centres.shape[0] == 3
    assert result.inertia == pytest.approx(0.0, abs=1e-12)


def test_dedup_keeps_one_frame_per_near_duplicate_group():
    rng = np.random.default_rng(2)
    # 4 scenes, each a run of near-identical frames, in time order.
    scenes = rng.standard_normal((4, 16))
    scenes /= np.linalg.norm(scenes, axis=1, keepdims=True)
    x = np.concatenate([s + 0.005 * rng.standard_normal((7, 16)) for s in scenes])
    kept = dedup_windows(x, window=150, clusters=4, seed=0)
    assert len(kept) == 4 and kept == sorted(kept)
    assert [k // 7 for k in kept] == [0, 1, 2, 3]  # one per scene
    # The kept frame is the one nearest its cluster's mean.
    for k in kept:
        scene = x[(k // 7) * 7:(k // 7 + 1) * 7]
        d = ((scene - scene.mean(0)) ** 2).sum(1)
        assert k % 7 == int(d.argmin())


def test_dedup_windows_cluster_separately():
    x = np.random.default_rng(3).standard_normal((40, 6))
    kept = dedup_windows(x, window=15, clusters=4, seed=1)
    # Windows [0, 15), [15, 30), [30, 40): 4 centres each.
    assert [sum(lo <= k < lo + 15 for k in kept) for lo in (0, 15, 30)] == [4, 4, 4]
    # A window smaller than the cluster count keeps all its frames.
    assert dedup_windows(x[:3], window=150, clusters=12) == [0, 1, 2]
    assert dedup_windows(x, window=15, clusters=4, seed=1) == kept


def test_bad_arguments():
    with pytest.raises(ValueError, match="k:"):
        kmeans(np.zeros((3, 2)), 0)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(np.zeros(3), 1)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((3, 2), np.nan), 1)
    with pytest.raises(ValueError, match="no points"):
        kmeans(np.zeros((0, 2)), 1)
    with pytest.raises(ValueError, match="window"):
        dedup_windows(np.zeros((3, 2)), window=0)
