"""Seeded k-means (k-means++ init, Lloyd iterations) in numpy, and the paper's near-duplicate removal.

Lay2Story drops redundant frames by clustering CLIP image embeddings with K-means, 12 centres per window of 150
frames, keeping one frame per centre. Here: the frame nearest each centre, in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KMeansResult", "dedup_windows", "kmeans", "kmeans_plus_plus"]


@dataclass(frozen=True)
class KMeansResult:
    """``centres`` ``(k, d)``, ``labels`` ``(n,)`` (cluster of each point), ``inertia`` (sum of squared distances)
    and ``iterations`` run."""

    centres: np.ndarray
    labels: np.ndarray
    inertia: float
    iterations: int


def _sq_dists(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _check_points(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (n, d), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x: contains NaN or inf values")
    return x


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007). Returns the indices of up to ``k`` distinct points: fewer
    when ``x`` has fewer than ``k`` distinct rows."""
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    d2 = _sq_dists(x, x[chosen])[:, 0]
    while len(chosen) < k:
        total = d2.sum()
        if total <= 0.0:  # every remaining point coincides with a chosen centre
            break
        nxt = int(rng.choice(n, p=d2 / total))
        chosen.append(nxt)
        d2 = np.minimum(d2, _sq_dists(x, x[nxt:nxt + 1])[:, 0])
    return np.asarray(chosen, dtype=np.int64)


def kmeans(x: np.ndarray, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-8) -> KMeansResult:
    """Clusters the rows of ``x`` into (at most) ``k`` clusters; the same ``x``, ``k`` and ``seed`` give the same
    result. A cluster that empties is re-seeded with the point farthest from its centre."""
    x = _check_points(x)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    if x.shape[0] == 0:
        raise ValueError("x: no points to cluster")
    rng = np.random.default_rng(seed)
    centres = x[kmeans_plus_plus(x, min(int(k), x.shape[0]), rng)].copy()
    labels = np.zeros(x.shape[0], dtype=np.int64)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        d2 = _sq_dists(x, centres)
        labels = d2.argmin(1)
        new = centres.copy()
        for c in range(centres.shape[0]):
            members = labels == c
            if members.any():
                new[c] = x[members].mean(0)
            else:
                far = int(d2[np.arange(x.shape[0]), labels].argmax())
                new[c] = x[far]
                labels[far] = c
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tol:
            break
    d2 = _sq_dists(x, centres)
    labels = d2.argmin(1)
    inertia = float(d2[np.arange(x.shape[0]), labels].sum())
    return KMeansResult(centres, labels, inertia, iterations)


def dedup_windows(embeddings: np.ndarray, window: int = 150, clusters: int = 12, seed: int = 0) -> list[int]:
    """Indices (ascending) of the frames to keep: within each window of ``window`` consecutive frames, k-means with
    ``min(clusters, frames in the window)`` centres and the frame nearest each centre (one per cluster)."""
    x = _check_points(embeddings)
    for name, value in (("window", window), ("clusters", clusters)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    kept: list[int] = []
    for w, start in enumerate(range(0, x.shape[0], window)):
        chunk = x[start:start + window]
        result = kmeans(chunk, min(clusters, chunk.shape[0]), seed=seed + w)
        d2 = _sq_dists(chunk, result.centres)
        members = [np.flatnonzero(result.labels == c) for c in range(result.centres.shape[0])]
        for c, idx in enumerate(members):
            if idx.size:
                kept.append(start + int(idx[d2[idx, c].argmin()]))
    return sorted(set(kept))
