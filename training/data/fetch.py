"""Where the videos come from: a folder (``--videos``), or a list of ids / URLs (``--video-list``) and a fetcher.

The paper's release is a list of YouTube ids. ``--video-list FILE`` takes one id or URL per line (blank lines and
``#`` comments are skipped, a repeated entry counts once). Each entry is fetched by the worker that decodes it, just
before decoding, and (unless ``--keep-downloads``) deleted once decoded:

- ``--fetcher yt-dlp``: downloads with yt-dlp (``pip install yt-dlp``, optional): a video stream of at least 720p
  where there is one, ``--rate-limit`` (bytes/s), ``--fetch-retries`` with back-off, ``--sleep-interval`` seconds
  between downloads of a worker, into ``--download-dir``;
- ``--fetcher local --fetch-root DIR``: the file ``DIR/<id>.<ext>`` (for tests, or videos fetched beforehand);
- ``--fetcher my_package.module.factory``: ``factory(config)`` returning any object with this module's
  :class:`Fetcher` shape.

A fetch that fails counts as the video's status ``fetch_failed`` (retried with ``--retry-failed``), never stops the
build.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from .config import BuildConfig
from .process import VideoTask
from .video import VIDEO_EXTENSIONS, VideoError

__all__ = ["Fetcher", "LocalFolderFetcher", "YtDlpFetcher", "build_fetcher", "discover_videos", "entry_key",
           "local_copy", "make_video_id", "parse_rate", "read_video_list"]

logger = logging.getLogger(__name__)

_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YOUTUBE_URL = re.compile(r"(?:youtube\.com/(?:watch\?(?:.*&)?v=|shorts/|embed/|live/)|youtu\.be/)([A-Za-z0-9_-]{11})")
# Messages of errors that a retry cannot fix.
_PERMANENT = ("unavailable", "private video", "removed", "terminated", "copyright", "not available", "sign in")


def make_video_id(rel_path: str) -> str:
    """A file-name-safe, unique, stable id: the sanitised stem plus 8 hex digits of the relative path's hash."""
    stem = os.path.splitext(os.path.basename(rel_path))[0]
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:48] or "video"
    return f"{safe}-{hashlib.sha1(rel_path.replace(os.sep, '/').encode()).hexdigest()[:8]}"


def discover_videos(root: str) -> list[VideoTask]:
    """Video files under ``root`` (recursively, by extension), sorted by relative path."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"videos: {root!r} is not a folder")
    tasks = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                tasks.append(VideoTask(make_video_id(rel), os.path.abspath(path), rel))
    return sorted(tasks, key=lambda t: t.rel_path)


def entry_key(entry: str) -> str:
    """The YouTube id of a YouTube URL or id, else the entry itself (so an id and its URL are the same video)."""
    match = _YOUTUBE_URL.search(entry)
    return match.group(1) if match else entry


def read_video_list(path: str) -> list[VideoTask]:
    """The entries of a video list, in file order, as tasks to fetch (``path`` ``None``, ``source`` the entry)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video_list: {path!r} is not a file")
    tasks, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            entry = re.split(r"\s+#", text, maxsplit=1)[0]  # "id  # comment"
            if any(c.isspace() for c in entry):
                raise ValueError(f"video_list: line {number}: expected one id or URL, got {entry!r}")
            key = entry_key(entry)
            if key in seen:
                logger.warning("video_list: line %d repeats %r; counted once", number, entry)
                continue
            seen.add(key)
            tasks.append(VideoTask(make_video_id(key), None, entry, source=entry))
    return tasks


# -------------------------------------------------------------------------------------------------------- fetchers
@runtime_checkable
class Fetcher(Protocol):
    """Makes a local file of one list entry. ``owns_files``: the file is a download, deleted once decoded."""

    owns_files: bool

    def fetch(self, source: str, video_id: str) -> str: ...


class LocalFolderFetcher:
    """``root/<key>.<ext>`` (key: the entry's YouTube id, or the entry's file name without extension)."""

    owns_files = False

    def __init__(self, root: str) -> None:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"fetch_root: {root!r} is not a folder")
        self.root = root

    def fetch(self, source: str, video_id: str) -> str:
        key = entry_key(source)
        stem = os.path.splitext(os.path.basename(key))[0]
        for name in (key, *(stem + ext for ext in VIDEO_EXTENSIONS)):
            path = os.path.join(self.root, name)
            if os.path.isfile(path) and name.lower().endswith(VIDEO_EXTENSIONS):
                return path
        raise VideoError("fetch_failed", f"{source}: no {stem}.<video extension> in {self.root}")


def parse_rate(text: str | None) -> int | None:
    """``"500K"`` -> 512000 bytes/s (K, M, G are powers of 1024); ``None`` stays ``None``."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", str(text))
    if not match:
        raise ValueError(f"rate_limit: expected bytes per second like 500K or 4.2M, got {text!r}")
    return int(float(match.group(1)) * 1024 ** " KMG".index(match.group(2) or " "))


class YtDlpFetcher:
    """Downloads with yt-dlp's Python API (imported on first use; ``pip install yt-dlp``)."""

    owns_files = True
    FORMAT = "bv*[height>=720][height<=1080]/bv*[height>=720]/bv*/b"

    def __init__(self, download_dir: str, rate_limit: str | None = None, retries: int = 3,
                 sleep_interval: float = 0.0) -> None:
        self.download_dir = download_dir
        self.rate_limit = parse_rate(rate_limit)
        self.retries = int(retries)
        self.sleep_interval = float(sleep_interval)
        self._last = 0.0

    @staticmethod
    def url(source: str) -> str:
        return f"https://www.youtube.com/watch?v={source}" if _YOUTUBE_ID.match(source) else source

    def params(self, video_id: str) -> dict:
        """The ``YoutubeDL`` options: one video, no audio needed, named after the video id."""
        params = {"format": self.FORMAT, "outtmpl": os.path.join(self.download_dir, f"{video_id}.%(ext)s"),
                  "noplaylist": True, "quiet": True, "no_warnings": True, "noprogress": True,
                  "retries": self.retries, "fragment_retries": self.retries, "overwrites": True}
        if self.rate_limit:
            params["ratelimit"] = self.rate_limit
        return params

    def fetch(self, source: str, video_id: str) -> str:
        try:
            import yt_dlp
        except ImportError as err:
            raise RuntimeError("fetcher: yt-dlp is not installed (pip install yt-dlp)") from err
        os.makedirs(self.download_dir, exist_ok=True)
        url = self.url(source)
        for attempt in range(self.retries + 1):
            wait = self._last + self.sleep_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            try:
                with yt_dlp.YoutubeDL(self.params(video_id)) as ydl:
                    info = ydl.extract_info(url, download=True)
                    downloads = (info or {}).get("requested_downloads") or [{}]
                    path = downloads[0].get("filepath") or ydl.prepare_filename(info)
                if not os.path.isfile(path):
                    raise VideoError("fetch_failed", f"{source}: yt-dlp reported {path!r} but wrote no file")
                return path
            except yt_dlp.utils.DownloadError as err:
                message = str(err)
                if any(word in message.lower() for word in _PERMANENT) or attempt == self.retries:
                    raise VideoError("fetch_failed", f"{source}: {message}") from err
                logger.info("%s: download failed (%s), retry %d of %d", source, message, attempt + 1, self.retries)
                time.sleep(min(60.0, 2.0 ** attempt + self.sleep_interval))
        raise AssertionError("unreachable")


def build_fetcher(config: BuildConfig) -> Fetcher:
    if config.fetcher == "local":
        return LocalFolderFetcher(config.fetch_root)
    if config.fetcher == "yt-dlp":
        folder = config.download_dir or os.path.join(tempfile.gettempdir(), "lay2story-downloads")
        return YtDlpFetcher(folder, config.rate_limit, config.fetch_retries, config.sleep_interval)
    module_name, _, attr = config.fetcher.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"fetcher: cannot import {config.fetcher!r}: {err}") from err
    fetcher = factory(config)
    if not isinstance(fetcher, Fetcher):
        raise ValueError(f"fetcher: {config.fetcher!r} returned {type(fetcher).__name__}, which has no "
                         "fetch(source, video_id) and owns_files")
    return fetcher


@contextlib.contextmanager
def local_copy(task: VideoTask, config: BuildConfig, fetcher: Fetcher | None = None) -> Iterator[str]:
    """The task's local file for the duration of the block: its path, or a fetched copy (deleted afterwards when it
    is a download, unless ``keep_downloads``)."""
    if task.source is None:
        yield task.path
        return
    fetcher = fetcher or build_fetcher(config)
    try:
        path = fetcher.fetch(task.source, task.video_id)
    except VideoError:
        raise
    except (OSError, RuntimeError, ValueError) as err:
        raise VideoError("fetch_failed", f"{task.source}: {type(err).__name__}: {err}") from err
    try:
        yield path
    finally:
        if fetcher.owns_files and not config.keep_downloads:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
