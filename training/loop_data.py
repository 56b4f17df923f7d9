"""Data loaders of a training run: sources, the optional feature cache, the train loader and validation batches.

The train loader is NOT passed to ``accelerator.prepare``: sharding over ranks, bucketing and resumption are done
by :class:`~training.buckets.BucketBatchSampler` (JSONL) or :class:`~training.dataset.StoryTarStream` (tar), which
are deterministic functions of ``(seed, epoch, rank)`` and a start position, so a resumed run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch.utils.data import DataLoader

from .buckets import BucketBatchSampler, BucketTable
from .config import ConfigError
from .dataset import (
    Skipped,
    StoryBatch,
    StoryDataset,
    StoryIndex,
    StoryTarStream,
    TrainingDataError,
    collate_examples,
    expand_sources,
)
from .feature_cache import FeatureCache

__all__ = ["SkipTracker", "build_loader", "build_validation_batches", "describe_data", "open_cache",
           "validation_in_cache"]

logger = logging.getLogger(__name__)


def describe_data(paths, field: str) -> tuple[list[str], str]:
    """The data files and their kind; a path that matches nothing raises :class:`ConfigError` naming ``field``."""
    try:
        return expand_sources(paths, field)
    except ValueError as err:
        raise ConfigError(str(err)) from err


@dataclass
class SkipTracker:
    """Counts the stories read and skipped; raises :class:`TrainingDataError` once more than ``max_fraction`` are
    skipped (judged after ``min_stories`` stories, and at the end of the run), naming the first bad ones."""

    max_fraction: float
    min_stories: int = 20
    read: int = 0
    skipped: int = 0
    first_bad: list[Skipped] = field(default_factory=list)

    def add(self, batch: StoryBatch) -> None:
        self.read += len(batch) + batch.skipped
        self.skipped += batch.skipped
        self.add_bad(batch.bad)

    def add_bad(self, bad) -> None:
        self.first_bad.extend(list(bad)[: max(0, 3 - len(self.first_bad))])

    def fraction(self) -> float:
        return self.skipped / self.read if self.read else 0.0

    def summary(self) -> str:
        return f"{self.skipped} of {self.read} stories ({100 * self.fraction():.0f}%)"

    def examples(self) -> str:
        if not self.first_bad:
            return ""
        return "; first: " + ", ".join(f"{b.where} ({b.reason})" for b in self.first_bad)

    def exceeded(self, read: int, skipped: int, final: bool = False) -> bool:
        """Whether ``skipped`` of ``read`` (totals over all ranks) is over the budget."""
        return (final or read >= self.min_stories) and skipped > self.max_fraction * read

    def error(self, read: int, skipped: int) -> TrainingDataError:
        return TrainingDataError(
            f"max_skip_fraction: {skipped} of {read} stories ({100 * skipped / max(read, 1):.0f}%) were skipped as "
            f"unreadable, more than the allowed {100 * self.max_fraction:.0f}%{self.examples()}; fix or remove "
            "them, or raise max_skip_fraction")


def open_cache(args) -> FeatureCache | None:
    if not args.feature_cache:
        return None
    try:
        cache = FeatureCache(args.feature_cache)
        cache.check_settings({"resolution": args.resolution, "aspect_ratio_buckets": args.aspect_ratio_buckets,
                              "max_frames": args.max_frames, "max_length": args.max_length})
    except ValueError as err:
        raise ConfigError(str(err)) from err
    logger.info("feature cache %s: %d stories", args.feature_cache, len(cache))
    return cache


def build_loader(args, files: list[str], kind: str, table: BucketTable, cache: FeatureCache | None, accelerator):
    """``(loader, sampler or None, batches per epoch per process or None for streams)``."""
    workers = args.dataloader_num_workers
    if kind == "tar":
        stream = StoryTarStream(files, table, args.max_frames, args.train_batch_size, seed=args.seed,
                                rank=accelerator.process_index, num_replicas=accelerator.num_processes, cache=cache)
        loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False)
        return loader, None, None
    index = StoryIndex(files, table)
    logger.info("train_data: %d stories in %d file(s) (%d invalid lines skipped), %d buckets used", len(index),
                len(files), index.invalid, len(set(index.buckets.tolist())))
    sampler = BucketBatchSampler(index.buckets, args.train_batch_size, seed=args.seed,
                                 num_replicas=accelerator.num_processes, rank=accelerator.process_index,
                                 accumulation=args.gradient_accumulation_steps)
    dataset = StoryDataset(index, args.max_frames, cache)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_examples, num_workers=workers,
                        persistent_workers=False)
    return loader, sampler, len(sampler)


def _validation_index(args, table: BucketTable) -> StoryIndex:
    files, kind = describe_data(args.validation_data, "validation_data")
    if kind != "jsonl":
        raise ConfigError("validation_data: expected JSONL files (tar shards are for streaming training data)")
    return StoryIndex(files, table)


def validation_in_cache(args, cache: FeatureCache | None) -> bool:
    """Whether every ``validation_data`` story is in the cache (``training/cache.py`` caches them too); if not,
    the validation loss needs T5 and the VAE."""
    if cache is None or not args.validation_data:
        return False
    index = _validation_index(args, BucketTable(args.resolution, enabled=False))
    missing = sum(k not in cache for k in index.keys)
    if missing:
        logger.warning("%d validation stories are not in the feature cache: T5 and the VAE are loaded for them",
                       missing)
    return missing == 0


def build_validation_batches(args, table: BucketTable, cache: FeatureCache | None, accelerator):
    """This rank's validation batches: fixed order (epoch 0), the same count on every rank; read from ``cache``
    when given (see :func:`validation_in_cache`)."""
    index = _validation_index(args, table)
    use_cache = cache
    sampler = BucketBatchSampler(index.buckets, args.train_batch_size, seed=args.seed,
                                 num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    return DataLoader(StoryDataset(index, args.max_frames, use_cache), batch_sampler=sampler,
                      collate_fn=collate_examples, num_workers=0)
