"""The feature-cache format (written by ``training/cache.py``, read by the trainer's dataset).

A cache folder holds:

- ``meta.json``: the settings the features depend on (resolution, buckets, frames, T5 length, model paths, dtype)
  and the list of shards;
- ``index.json``: story key -> shard file name;
- ``empty.safetensors``: the T5 embedding of the empty caption (classifier-free guidance, reference slots);
- ``features-NNNNN.safetensors``: per story key ``K``: ``K/frames`` (the frames' VAE moments ``(F, 2C, h, w)``: mean
  then log-variance, so training samples a fresh latent each time as PixArt does), ``K/ref/<k>`` (character ``k``'s
  reference moments), ``K/text/<sha1>`` (T5 states of each caption, cut to its tokens ``(L_valid, D)``); the header
  metadata ``K`` holds the story JSON with boxes mapped through the crop, and its bucket size.

All files are written atomically. Tensors are read with safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lay2story_core.story import Story

from .samples import Example

__all__ = ["CACHE_VERSION", "FeatureCache", "MissingFeaturesError", "ShardWriter", "pad_text_embeddings",
           "text_id", "write_json_atomic"]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
META_FILE, INDEX_FILE, EMPTY_FILE = "meta.json", "index.json", "empty.safetensors"
# settings a training run must share with the cache it reads
MATCHING_SETTINGS = ("resolution", "aspect_ratio_buckets", "max_frames", "max_length")


class MissingFeaturesError(KeyError):
    """A story has no entry in the feature cache (it failed or was added after caching)."""


def text_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def write_json_atomic(path: str, data: object) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ShardWriter:
    """Collects stories' features and writes them as one ``.safetensors`` shard."""

    def __init__(self, path: str, dtype: torch.dtype) -> None:
        self.path, self.dtype = path, dtype
        self.tensors: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, str] = {}

    def add(self, key: str, story: Story, size: tuple[int, int], frames: torch.Tensor,
            references: Mapping[int, torch.Tensor], texts: Mapping[str, torch.Tensor]) -> None:
        """``frames (F, 2C, h, w)`` moments, ``references`` by character index, ``texts`` by caption ``(L, D)``."""
        self.tensors[f"{key}/frames"] = frames.detach().to("cpu", self.dtype)
        for index, moments in references.items():
            self.tensors[f"{key}/ref/{index}"] = moments.detach().to("cpu", self.dtype)
        for text, states in texts.items():
            self.tensors[f"{key}/text/{text_id(text)}"] = states.detach().to("cpu", self.dtype)
        self.metadata[key] = json.dumps({"story": story.to_dict(), "size": list(size)}, separators=(",", ":"))

    @property
    def keys(self) -> list[str]:
        return list(self.metadata)

    def write(self) -> None:
        save_safetensors_atomic(self.tensors, self.path, self.metadata)


def pad_text_embeddings(states: Sequence[torch.Tensor], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack cut T5 states ``(L_i, D)`` into ``(n, max_length, D)`` (zero padding) and their ``(n, max_length)``
    mask; the padding is masked out of every attention, so this equals the padded encoder output."""
    if not states:
        raise ValueError("states: need at least one caption")
    dim = states[0].shape[-1]
    embeds = states[0].new_zeros(len(states), max_length, dim)
    mask = torch.zeros(len(states), max_length, dtype=torch.long)
    for i, s in enumerate(states):
        n = min(s.shape[0], max_length)
        embeds[i, :n] = s[:n]
        mask[i, :n] = 1
    return embeds, mask


class FeatureCache:
    """Reads a cache folder. Open shards are kept per instance (each data-loader worker has its own)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = os.fspath(folder)
        try:
            with open(os.path.join(self.folder, META_FILE), encoding="utf-8") as handle:
                self.meta = json.load(handle)
            with open(os.path.join(self.folder, INDEX_FILE), encoding="utf-8") as handle:
                self.index: dict[str, str] = json.load(handle)
        except FileNotFoundError as err:
            raise ValueError(f"feature_cache: {self.folder!r} is not a finished feature cache (no {err.filename}); "
                             "run training/cache.py first") from err
        if self.meta.get("version") != CACHE_VERSION:
            raise ValueError(f"feature_cache: {self.folder!r} has version {self.meta.get('version')!r}, this trainer "
                             f"reads version {CACHE_VERSION}")
        with safe_open(os.path.join(self.folder, EMPTY_FILE), framework="pt") as handle:
            self.empty_text = handle.get_tensor("text")
        self._handles: dict[str, tuple[object, dict[str, list[str]]]] = {}

    def __getstate__(self) -> dict:  # open shards do not cross process boundaries (data-loader workers)
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def check_settings(self, settings: Mapping[str, object]) -> None:
        """Raise unless the run's settings match those the cache was written with."""
        for name in MATCHING_SETTINGS:
            if name in settings and self.meta.get(name) != settings[name]:
                raise ValueError(f"feature_cache: {name} is {self.meta.get(name)!r} in the cache but "
                                 f"{settings[name]!r} in this run; re-run training/cache.py")

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def _open(self, shard: str) -> tuple[object, dict[str, list[str]]]:
        if shard not in self._handles:
            handle = safe_open(os.path.join(self.folder, shard), framework="pt")
            names: dict[str, list[str]] = {}
            for name in handle.keys():
                names.setdefault(name.split("/", 1)[0], []).append(name)
            self._handles[shard] = (handle, names)
        return self._handles[shard]

    def example(self, key: str) -> Example:
        """The cached story ``key`` (boxes already cropped) with its moments, references and caption states (by
        :func:`text_id`)."""
        shard = self.index.get(key)
        if shard is None:
            raise MissingFeaturesError(f"story {key} is not in the feature cache {self.folder!r}")
        handle, names_by_key = self._open(shard)
        info = json.loads(handle.metadata()[key])
        story = Story.from_dict(info["story"])
        names = set(names_by_key.get(key, ()))
        references = {}
        for k, character in enumerate(story.characters):
            name = f"{key}/ref/{k}"
            if name in names:
                box = character.reference.box if character.reference is not None else None
                references[character.id] = (handle.get_tensor(name), box)
        prefix = f"{key}/text/"
        texts = {n[len(prefix):]: handle.get_tensor(n) for n in sorted(names) if n.startswith(prefix)}
        return Example(key=key, story=story, size=tuple(info["size"]), moments=handle.get_tensor(f"{key}/frames"),
                       references=references, texts=texts)
