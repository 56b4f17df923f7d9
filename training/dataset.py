"""Training data: story JSONL files (map-style, bucketed, resumable) and tar shards (streaming at scale).

- **JSONL**: one story (the schema of :mod:`lay2story_core.story`) per line, image paths relative to the file, as
  ``training/data`` and :func:`lay2story_core.shapestory.generator.write_dataset` write them. Lines are validated once
  when the index is built (invalid ones are skipped and counted); examples are read lazily.
- **Tar shards**: ``<name>.json`` members hold stories whose image paths name members of the same tar. Shards are
  split over ranks and data-loader workers (one shard per worker and rank at a time), stories are bucketed in a
  buffer, and the stream repeats with a new shard order per pass (so ``--max_train_steps`` is required).

A frame or reference that cannot be read (missing, corrupt) or a story missing from the feature cache does not stop
training: the example is skipped with a logged warning and counted in the batch's ``skipped`` (the trainer stops
once more than ``--max_skip_fraction`` of the stories are skipped). Only data errors (:data:`DATA_ERRORS`: I/O,
decoding, schema) are skipped; any other exception is a bug and propagates.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from lay2story_core.story import LayoutError, Story

from .buckets import BucketTable
from .feature_cache import FeatureCache, MissingFeaturesError
from .samples import Example, load_pixels, story_key, truncate_story

__all__ = ["DATA_ERRORS", "Skipped", "StoryBatch", "StoryDataset", "StoryIndex", "StoryTarStream", "TrainingDataError",
           "collate_examples", "expand_sources"]

logger = logging.getLogger(__name__)

# What "this sample's data is bad" looks like: missing/unreadable files (OSError, incl. PIL's UnidentifiedImageError),
# truncated streams, undecodable JSON/text and schema errors (ValueError, incl. LayoutError), broken tar members,
# zlib streams, oversized images, cache misses and corrupt cached tensors. Anything else is a bug and propagates.
DATA_ERRORS = (OSError, EOFError, ValueError, tarfile.TarError, zlib.error, Image.DecompressionBombError,
               MissingFeaturesError, SafetensorError)


class TrainingDataError(ValueError):
    """The training data cannot be used: too many unreadable stories, or none at all. One line, names samples."""


@dataclass(frozen=True)
class Skipped:
    """A story that could not be loaded (why, and where)."""

    where: str
    reason: str

    @classmethod
    def of(cls, where: str, err: BaseException) -> Skipped:
        """Log and record ``err`` (its first line) as the reason ``where`` was skipped."""
        first = (str(err).splitlines() or [""])[0]
        logger.warning("skipping story %s: %s: %s", where, type(err).__name__, first)
        return cls(where, f"{type(err).__name__}: {first}")


@dataclass
class StoryBatch:
    """Stories of one bucket. ``frames`` concatenates their frames: pixels ``(F, 3, H, W)`` or VAE moments
    ``(F, 2C, h, w)`` (``latent=True``); ``frame_story[f]`` is the story of frame ``f``. ``skipped`` counts stories
    dropped from this batch (and, for streams, dropped since the previous batch)."""

    examples: list[Example]
    frames: torch.Tensor | None
    frame_story: list[int]
    latent: bool
    skipped: int
    bad: tuple[Skipped, ...] = ()  # the skipped stories (where and why), as far as known

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_frames(self) -> int:
        return len(self.frame_story)


def collate_examples(items: Sequence[Example | Skipped], extra_skipped: int = 0,
                     extra_bad: Sequence[Skipped] = ()) -> StoryBatch:
    examples = [e for e in items if isinstance(e, Example)]
    skipped = len(items) - len(examples) + extra_skipped
    bad = tuple(extra_bad) + tuple(e for e in items if isinstance(e, Skipped))
    if not examples:
        return StoryBatch([], None, [], False, skipped, bad)
    latent = examples[0].moments is not None
    frames = torch.cat([e.moments if latent else e.pixels for e in examples])
    frame_story = [s for s, e in enumerate(examples) for _ in range(e.story.num_frames)]
    return StoryBatch(examples, frames, frame_story, latent, skipped, bad)


def expand_sources(paths: Sequence[str], field: str = "train_data") -> tuple[list[str], str]:
    """Files named by ``paths`` (files, folders searched recursively, glob patterns) and their kind, ``"jsonl"`` or
    ``"tar"``. A folder gives its JSONL files, or its tar shards if it has no JSONL (``training/data`` writes both
    side by side with ``--tar``; name ``shards/*.tar`` to stream them). Raises ``ValueError`` naming the field for a
    path that matches nothing or a mix of kinds."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):  # a dataset folder: its JSONL shards (its tars only when it has no JSONL)
            found = sorted(glob.glob(os.path.join(path, "**", "*.jsonl"), recursive=True)) or sorted(
                glob.glob(os.path.join(path, "**", "*.tar"), recursive=True))
        elif os.path.isfile(path):
            found = [path]
        else:
            found = sorted(glob.glob(path, recursive=True))
        if not found:
            raise ValueError(f"{field}: {path!r} matches no JSONL file or tar shard")
        files.extend(found)
    kinds = {"tar" if f.endswith(".tar") else "jsonl" for f in files}
    if len(kinds) > 1:
        raise ValueError(f"{field}: mixes JSONL files and tar shards ({files[:4]}...); use one kind per run")
    return files, kinds.pop()


def _load_example(story: Story, key: str, size: tuple[int, int], max_frames: int, cache: FeatureCache | None,
                  opener=None) -> Example:
    if cache is not None:
        return cache.example(key)
    return load_pixels(truncate_story(story, max_frames), key, size, opener)


class StoryIndex:
    """Where every valid story of some JSONL files is (file, byte offset), with its cache key and bucket."""

    def __init__(self, files: Sequence[str], table: BucketTable) -> None:
        self.files = [os.path.abspath(f) for f in files]
        self.table = table
        self.invalid = 0
        self.bad: list[Skipped] = []  # the first invalid lines
        file_ids, offsets, buckets, self.keys = [], [], [], []
        for fid, path in enumerate(self.files):
            with open(path, "rb") as handle:
                offset = 0
                for lineno, line in enumerate(handle, 1):
                    start, offset = offset, offset + len(line)
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                        story = Story.from_dict(data)
                    except (ValueError, LayoutError) as err:
                        self.invalid += 1
                        logger.warning("skipping invalid story at %s:%d: %s", path, lineno, err)
                        if len(self.bad) < 8:
                            self.bad.append(Skipped(f"{path}:{lineno}", f"{type(err).__name__}: {err}"))
                        continue
                    file_ids.append(fid)
                    offsets.append(start)
                    buckets.append(table.bucket_of(story.height, story.width))
                    self.keys.append(story_key(data, os.path.basename(path)))
        self.file_ids = np.asarray(file_ids, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.buckets = np.asarray(buckets, dtype=np.int64)
        if self.invalid:
            logger.warning("%d invalid stories skipped in %s", self.invalid, ", ".join(self.files))

    def __len__(self) -> int:
        return len(self.offsets)

    def where(self, index: int) -> str:
        return f"{self.files[self.file_ids[index]]}@{int(self.offsets[index])}"

    def read(self, index: int) -> Story:
        """Story ``index`` with its image paths made absolute against its file's folder."""
        path = self.files[self.file_ids[index]]
        with open(path, "rb") as handle:
            handle.seek(int(self.offsets[index]))
            line = handle.readline()
        return Story.from_json(line).resolve_paths(os.path.dirname(path))


class StoryDataset(Dataset):
    """Map-style dataset over a :class:`StoryIndex`; ``dataset[i]`` is an :class:`Example` or a :class:`Skipped`."""

    def __init__(self, index: StoryIndex, max_frames: int, cache: FeatureCache | None = None) -> None:
        self.index, self.max_frames, self.cache = index, max_frames, cache

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Example | Skipped:
        where = self.index.where(i)
        try:
            story = self.index.read(i)
            size = self.index.table.size(int(self.index.buckets[i]))
            return _load_example(story, self.index.keys[i], size, self.max_frames, self.cache)
        except DATA_ERRORS as err:  # unreadable data is skipped; a bug propagates
            return Skipped.of(where, err)


def _tar_samples(path: str) -> Iterator[tuple[str, dict | Skipped, tarfile.TarFile]]:
    """``(member name, story dict or Skipped, open tar)`` for each ``.json`` member of a shard."""
    with tarfile.open(path, "r") as tar:
        for member in tar.getmembers():
            if not (member.isfile() and member.name.endswith(".json")):
                continue
            where = f"{path}:{member.name}"
            try:
                data = json.loads(tar.extractfile(member).read())
                Story.from_dict(data)
            except DATA_ERRORS as err:  # a corrupt member is skipped
                yield member.name, Skipped.of(where, err), tar
                continue
            yield member.name, data, tar


def _member_opener(tar: tarfile.TarFile, base: str):
    folder = os.path.dirname(base)

    def read(name: str) -> bytes:
        for candidate in (os.path.normpath(os.path.join(folder, name)).replace(os.sep, "/"), name):
            try:
                return tar.extractfile(candidate).read()
            except KeyError:
                continue
        raise FileNotFoundError(f"no member {name!r} in {tar.name}")

    return read


class StoryTarStream(IterableDataset):
    """Endless stream of :class:`StoryBatch` from tar shards, split over ranks and workers (see the module doc).

    ``start`` skips this rank's first ``start`` batches (resuming): each worker skips its share before decoding
    any image, so resuming costs reading the skipped stories' JSON only.
    """

    def __init__(self, shards: Sequence[str], table: BucketTable, max_frames: int, batch_size: int, *, seed: int = 0,
                 rank: int = 0, num_replicas: int = 1, cache: FeatureCache | None = None, start: int = 0) -> None:
        self.shards = [os.path.abspath(s) for s in shards]
        self.table, self.max_frames, self.batch_size = table, max_frames, batch_size
        self.seed, self.rank, self.num_replicas, self.cache, self.start = seed, rank, num_replicas, cache, start

    def _my_shards(self, epoch: int, worker: int, workers: int) -> list[str]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = [self.shards[i] for i in torch.randperm(len(self.shards), generator=gen).tolist()]
        slot, total = self.rank * workers + worker, self.num_replicas * workers
        mine = order[slot::total]
        if not mine:  # fewer shards than workers x ranks: share (some stories are seen more often)
            mine = [order[slot % len(order)]]
        return mine

    def __iter__(self) -> Iterator[StoryBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if len(self.shards) < self.num_replicas * workers and worker == 0:
            logger.warning("%d tar shards for %d ranks x %d workers: some shards are read by several workers",
                           len(self.shards), self.num_replicas, workers)
        to_skip = len(range(worker, self.start, workers))  # the DataLoader takes batches from workers in turn
        pending: dict[int, list] = {}
        skipped: list[Skipped] = []
        epoch = 0
        while True:
            for shard in self._my_shards(epoch, worker, workers):
                for name, data, tar in _tar_samples(shard):
                    if isinstance(data, Skipped):
                        skipped.append(data)
                        continue
                    story = Story.from_dict(data)
                    bucket = self.table.bucket_of(story.height, story.width)
                    key = story_key(data, f"{os.path.basename(shard)}:{name}")
                    group = pending.setdefault(bucket, [])
                    group.append((story, key, name, shard))
                    if len(group) < self.batch_size:
                        continue
                    items, group[:] = group[:], []
                    if to_skip:
                        to_skip -= 1
                        continue
                    batch = [self._load(*item, bucket, tar if item[3] == shard else None) for item in items]
                    yield collate_examples(batch, len(skipped), skipped)
                    skipped = []
            epoch += 1

    def _load(self, story: Story, key: str, name: str, shard: str, bucket: int, tar: tarfile.TarFile | None):
        """Load one story; ``tar`` is the open shard, or ``None`` for a story left over from an earlier shard."""
        where = f"{shard}:{name}"
        try:
            size = self.table.size(bucket)
            if self.cache is not None:
                return self.cache.example(key)
            if tar is not None:
                return _load_example(story, key, size, self.max_frames, None, _member_opener(tar, name))
            with tarfile.open(shard, "r") as other:
                return _load_example(story, key, size, self.max_frames, None, _member_opener(other, name))
        except DATA_ERRORS as err:  # unreadable data is skipped; a bug propagates
            return Skipped.of(where, err)
