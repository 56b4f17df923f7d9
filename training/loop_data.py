"""Data loaders of a training run: sources, the optional feature cache, the train loader and validation batches.

The train loader is NOT passed to ``accelerator.prepare``: sharding over ranks, bucketing and resumption are done
by :class:`~training.buckets.BucketBatchSampler` (JSONL) or :class:`~training.dataset.StoryTarStream` (tar), which
are deterministic functions of ``(seed, epoch, rank)`` and a start position, so a resumed run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import logging

from torch.utils.data import DataLoader

from .buckets import BucketBatchSampler, BucketTable
from .config import ConfigError
from .dataset import StoryDataset, StoryIndex, StoryTarStream, collate_examples, expand_sources
from .feature_cache import FeatureCache

__all__ = ["build_loader", "build_validation_batches", "describe_data", "open_cache", "validation_in_cache"]

logger = logging.getLogger(__name__)


def describe_data(paths, field: str) -> tuple[list[str], str]:
    """The data files and their kind; a path that matches nothing raises :class:`ConfigError` naming ``field``."""
    try:
        return expand_sources(paths, field)
    except ValueError as err:
        raise ConfigError(str(err)) from err


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
