"""Settings of a dataset build, validated, and the subset that determines the output (checked on resume)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass

from .grouping import DEFAULT_LENGTHS, DEFAULT_PROBS, check_length_probs

__all__ = ["CAPTIONERS", "ENGINES", "FETCHERS", "IMAGE_FORMATS", "START_METHODS", "BuildConfig"]

CAPTIONERS = ("template", "http", "transformers")
ENGINES = ("local", "ray")
FETCHERS = ("local", "yt-dlp")
IMAGE_FORMATS = ("jpg", "png")
START_METHODS = ("spawn", "forkserver", "fork")

# Fields that do not change what is written (so a resumed run may change them). Where the videos come from is not
# checked either: a video's id, not its source, identifies it.
_RUNTIME_FIELDS = ("videos", "out", "workers", "start_method", "batch_size", "progress", "device", "shard_size",
                   "retry_failed", "caption_retries", "caption_timeout", "api_key_env", "engine", "ray_address",
                   "cpus_per_worker", "gpus_per_worker", "decode_workers", "detect_workers", "threads", "video_list",
                   "fetcher", "fetch_root", "download_dir", "keep_downloads", "fetch_retries", "rate_limit",
                   "sleep_interval")


def _positive(value: object, name: str, *, integer: bool = False, zero: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        what = "integer" if integer else "number"
        raise ValueError(f"{name}: expected a {'non-negative' if zero else 'positive'} {what}, got {value!r}")


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``python -m training.data.build`` takes (see its ``--help`` for each field)."""

    videos: str | None
    out: str
    detector: str
    clip: str
    fps: float = 0.25
    min_size: int = 720
    prompt: str = "the main character"
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    window: int = 150
    clusters: int = 12
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    length_probs: tuple[float, ...] = DEFAULT_PROBS
    seed: int = 0
    captioner: str = "template"
    identity: str = "the main character"
    caption_url: str | None = None
    caption_model: str | None = None
    api_key_env: str | None = None
    caption_retries: int = 4
    caption_timeout: float = 60.0
    filters: tuple[str, ...] = ()
    aesthetic_head: str | None = None
    min_aesthetic: float = 5.0
    safety_checker: str | None = None
    safety_adjustment: float = 0.0
    image_format: str = "jpg"
    jpeg_quality: int = 95
    max_frames_per_video: int | None = None
    shard_size: int = 1000
    tar: bool = False
    workers: int = 1
    start_method: str = "spawn"
    batch_size: int = 8
    device: str | None = None
    retry_failed: bool = False
    progress: bool = True
    engine: str = "local"
    ray_address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    decode_workers: int | None = None
    detect_workers: int | None = None
    threads: int | None = None
    video_list: str | None = None
    fetcher: str = "local"
    fetch_root: str | None = None
    download_dir: str | None = None
    keep_downloads: bool = False
    fetch_retries: int = 3
    rate_limit: str | None = None
    sleep_interval: float = 0.0

    def __post_init__(self) -> None:
        if (self.videos is None) == (self.video_list is None):
            raise ValueError(f"videos/video_list: give exactly one (a folder of videos or a list of ids/URLs), got "
                             f"{self.videos!r} and {self.video_list!r}")
        for name in ("aesthetic_head", "safety_checker", "video_list", "fetch_root", "download_dir", "videos"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                    raise ValueError(f"{name}: expected a path, got {value!r}")
                object.__setattr__(self, name, os.fspath(value))
        for name in ("out", "detector", "clip"):
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                raise ValueError(f"{name}: expected a path, got {value!r}")
            object.__setattr__(self, name, os.fspath(value))
        _positive(self.fps, "fps")
        _positive(self.min_size, "min_size", integer=True, zero=True)
        for name in ("box_threshold", "text_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
        for name in ("window", "clusters", "shard_size", "workers", "batch_size", "jpeg_quality"):
            _positive(getattr(self, name), name, integer=True)
        _positive(self.caption_retries, "caption_retries", integer=True, zero=True)
        _positive(self.caption_timeout, "caption_timeout")
        if self.max_frames_per_video is not None:
            _positive(self.max_frames_per_video, "max_frames_per_video", integer=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")
        lengths, probs = check_length_probs(self.lengths, self.length_probs)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "length_probs", probs)
        for name in ("prompt", "identity"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"captioner: expected one of {CAPTIONERS}, got {self.captioner!r}")
        if self.captioner == "http" and not self.caption_url:
            raise ValueError("caption_url: the http captioner needs --caption-url (an OpenAI-compatible server)")
        if self.captioner == "transformers" and not self.caption_model:
            raise ValueError("caption_model: the transformers captioner needs --caption-model (a local model folder)")
        if self.start_method not in START_METHODS:
            raise ValueError(f"start_method: expected one of {START_METHODS}, got {self.start_method!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format: expected one of {IMAGE_FORMATS}, got {self.image_format!r}")
        self._check_engine_and_sources()
        object.__setattr__(self, "filters", tuple(self.filters))
        for k, spec in enumerate(self.filters):
            if not isinstance(spec, str) or not spec.strip():
                raise ValueError(f"filters[{k}]: expected 'NAME[:key=value,...]', got {spec!r}")

    def _check_engine_and_sources(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine: expected one of {ENGINES}, got {self.engine!r}")
        _positive(self.cpus_per_worker, "cpus_per_worker")
        if self.gpus_per_worker is not None:
            _positive(self.gpus_per_worker, "gpus_per_worker", zero=True)
        for name in ("threads", "decode_workers", "detect_workers"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), name, integer=True)
        _positive(self.fetch_retries, "fetch_retries", integer=True, zero=True)
        _positive(self.sleep_interval, "sleep_interval", zero=True)
        for name in ("min_aesthetic", "safety_adjustment"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if not isinstance(self.fetcher, str) or not (self.fetcher in FETCHERS or "." in self.fetcher):
            raise ValueError(f"fetcher: expected one of {FETCHERS} or a dotted import path, got {self.fetcher!r}")
        if self.video_list is not None and self.fetcher == "local" and self.fetch_root is None:
            raise ValueError("fetch_root: the local fetcher needs --fetch-root (the folder holding <id>.<ext> files)")
        if self.rate_limit is not None and not re.fullmatch(r"\d+(\.\d+)?[KMG]?", str(self.rate_limit)):
            raise ValueError(f"rate_limit: expected bytes per second like 500K or 4.2M, got {self.rate_limit!r}")

    def output_settings(self) -> dict:
        """The settings that determine the output, as JSON values (recorded in the manifest)."""
        data = dataclasses.asdict(self)
        for name in _RUNTIME_FIELDS:
            data.pop(name)
        data["lengths"] = list(self.lengths)
        data["length_probs"] = list(self.length_probs)
        data["filters"] = list(self.filters)
        return data

    def replace(self, **changes) -> BuildConfig:
        return dataclasses.replace(self, **changes)
