"""Aspect-ratio buckets (as PixArt trains) and the deterministic, resumable, distributed batch sampler over them.

Buckets come from PixArt's tables (diffusers ``ASPECT_RATIO_{256,512,1024}_BIN``: height/width ratio -> pixel size at
about ``resolution**2`` pixels); other resolutions scale the 512 table. A story goes to the bucket whose ratio is
closest to its ``height / width`` (PixArt's ``get_closest_ratio``); all stories of a batch share a bucket, so their
frames stack into one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["BucketBatchSampler", "BucketTable"]


def _pixart_table(resolution: int) -> dict[str, list[float]] | None:
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
        ASPECT_RATIO_256_BIN,
        ASPECT_RATIO_512_BIN,
        ASPECT_RATIO_1024_BIN,
    )

    return {256: ASPECT_RATIO_256_BIN, 512: ASPECT_RATIO_512_BIN, 1024: ASPECT_RATIO_1024_BIN}.get(resolution)


class BucketTable:
    """The pixel sizes ``(height, width)`` stories are trained at.

    Args:
        resolution: the square size (bucket "1.0"); PixArt: 256, 512 or 1024.
        multiple: every side is a multiple of this (VAE factor x patch size; 16 for PixArt).
        enabled: ``False`` puts every story in the single square bucket.
    """

    def __init__(self, resolution: int, multiple: int = 16, *, enabled: bool = True) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < multiple:
            raise ValueError(f"resolution: expected an integer >= {multiple}, got {resolution!r}")
        if resolution % multiple:
            raise ValueError(f"resolution: {resolution} is not a multiple of {multiple}")
        self.resolution, self.multiple, self.enabled = resolution, multiple, bool(enabled)
        sizes: dict[tuple[int, int], float] = {}
        if enabled:
            table = _pixart_table(resolution)
            scale = 1.0 if table is not None else resolution / 512
            for ratio, (h, w) in (table or _pixart_table(512)).items():
                size = (self._round(h * scale), self._round(w * scale))
                sizes.setdefault(size, float(ratio))
        sizes.setdefault((resolution, resolution), 1.0)
        self.sizes: list[tuple[int, int]] = sorted(sizes, key=lambda s: s[0] / s[1])
        self.ratios = np.array([sizes[s] for s in self.sizes], dtype=np.float64)

    def _round(self, value: float) -> int:
        return max(self.multiple, int(round(value / self.multiple)) * self.multiple)

    def __len__(self) -> int:
        return len(self.sizes)

    def bucket_of(self, height: int, width: int) -> int:
        """Index of the bucket closest in ratio to ``height / width`` (the square one when buckets are off)."""
        if height <= 0 or width <= 0:
            raise ValueError(f"height/width: expected positive sizes, got {height}x{width}")
        if not self.enabled:
            return 0
        return int(np.argmin(np.abs(self.ratios - height / width)))

    def size(self, bucket: int) -> tuple[int, int]:
        return self.sizes[bucket]

    def describe(self) -> dict:
        return {"resolution": self.resolution, "multiple": self.multiple, "enabled": self.enabled}


class BucketBatchSampler:
    """Batches of same-bucket indices, reproducible from ``(seed, epoch)``, sharded over ranks, resumable.

    Each epoch: a seeded permutation of all indices is walked and each index joins its bucket's pending batch; a full
    batch is emitted (PixArt's ``AspectRatioBatchSampler``); partial batches are dropped. The epoch's batch list is cut
    to a multiple of ``num_replicas * accumulation`` (so every rank runs the same number of whole optimizer steps)
    and rank ``r`` takes batches ``r, r + R, ...``. :meth:`set_epoch` picks the epoch; ``start`` skips the first
    batches of this rank's list (resuming mid-epoch).
    """

    def __init__(self, buckets: Sequence[int] | np.ndarray, batch_size: int, *, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, accumulation: int = 1) -> None:
        if batch_size < 1 or num_replicas < 1 or accumulation < 1:
            raise ValueError(f"batch_size/num_replicas/accumulation: expected >= 1, got {batch_size}, "
                             f"{num_replicas}, {accumulation}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected 0 <= rank < {num_replicas}, got {rank}")
        self.buckets = np.asarray(buckets, dtype=np.int64)
        self.batch_size, self.seed = batch_size, seed
        self.num_replicas, self.rank, self.accumulation = num_replicas, rank, accumulation
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of an epoch, in order, already cut to a multiple of ``num_replicas * accumulation``."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.buckets), generator=gen).tolist()
        pending: dict[int, list[int]] = {}
        batches = []
        for index in order:
            group = pending.setdefault(int(self.buckets[index]), [])
            group.append(index)
            if len(group) == self.batch_size:
                batches.append(group[:])
                group.clear()
        unit = self.num_replicas * self.accumulation
        return batches[: len(batches) // unit * unit]

    def rank_batches(self, epoch: int) -> list[list[int]]:
        return self.epoch_batches(epoch)[self.rank::self.num_replicas]

    def __len__(self) -> int:
        """Batches this rank gets per epoch (the same for every epoch and rank)."""
        counts = np.bincount(self.buckets, minlength=1) // self.batch_size if len(self.buckets) else np.zeros(1)
        unit = self.num_replicas * self.accumulation
        return int(counts.sum()) // unit * unit // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches(self.epoch)[self.start:]


def steps_per_epoch(batches_per_epoch: int, accumulation: int) -> int:
    """Optimizer steps per epoch (batches are already a multiple of ``accumulation``)."""
    return math.ceil(batches_per_epoch / accumulation)
