"""Video frame sampling with PyAV, seek-free.

The paper samples frames with FFmpeg at 0.25 fps. We decode the stream once, front to back, and keep the first
decoded frame at or after each sampling time ``k / fps`` (``k = 0, 1, ...``); only kept frames are converted to RGB.
Seeking is avoided on purpose: it is keyframe-granular and unreliable on badly muxed web videos, and sequential decode
gives the same frames for the same file every time.

A packet that fails to decode is skipped and counted (``corrupt``), so one damaged region does not lose the video.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

__all__ = ["VIDEO_EXTENSIONS", "DecodeInfo", "FrameSampler", "SampledFrame", "VideoError", "sample_frames",
           "write_synthetic_video"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".wmv")

# A frame whose timestamp is this close below a sampling time counts as at it (timestamp rounding in containers).
_TIME_EPSILON = 1e-3


class VideoError(Exception):
    """A video that yields no frames. ``reason`` is the short name counted in the dataset stats."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True)
class SampledFrame:
    """A kept frame: its sampling index ``k`` (the frame at or after ``k / fps``), timestamp in seconds, and image."""

    index: int
    time: float
    image: Image.Image


@dataclass(frozen=True)
class DecodeInfo:
    """What the decoder saw: frames decoded, packets that failed to decode, the stream size and duration (s)."""

    decoded: int
    corrupt: int
    width: int
    height: int
    duration: float | None


def _conversion_options(av) -> dict:
    """``to_image`` options: one thread on PyAV >= 17, whose frame conversion otherwise runs swscale on a pool of
    slice threads (one per CPU). A forked build worker (``--start-method fork``, the workers test) hung for good in
    that pool's teardown (``avpriv_slicethread_free`` joining a thread that was not its own; PyAV 18.1, FFmpeg 8);
    with one thread swscale makes no pool. Each frame is converted once, so the pool bought little."""
    major = int(str(av.__version__).split(".")[0])
    return {"threads": 1} if major >= 17 else {}


def _frame_time(frame, counter: int, rate: float | None) -> float | None:
    if frame.time is not None:
        return float(frame.time)
    if rate:
        return counter / rate
    return None


class FrameSampler:
    """Iterates over the kept frames of one video as they are decoded (so memory holds one frame at a time, not the
    video); :attr:`info` is set once the iteration ends. See :func:`sample_frames` for the errors."""

    def __init__(self, path: str | os.PathLike, fps: float = 0.25, max_frames: int | None = None) -> None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps: expected a positive number, got {fps!r}")
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 1):
            raise ValueError(f"max_frames: expected a positive integer or None, got {max_frames!r}")
        self.path = os.fspath(path)
        self.fps = float(fps)
        self.max_frames = max_frames
        self.info: DecodeInfo | None = None

    def __iter__(self) -> Iterator[SampledFrame]:
        import av

        name, fps = self.path, self.fps
        convert = _conversion_options(av)
        try:
            container = av.open(name)
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
            raise VideoError("unreadable", f"{name}: {err}") from err
        with container:
            if not container.streams.video:
                raise VideoError("no_video_stream", f"{name}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate) if stream.average_rate else None
            duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            if duration is None and container.duration:
                duration = container.duration / 1_000_000  # av.time_base (microseconds)
            kept = decoded = corrupt = next_k = 0
            try:
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                    except (av.FFmpegError, ValueError) as err:
                        corrupt += 1
                        logger.debug("%s: skipping a packet that does not decode: %s", name, err)
                        continue
                    for frame in frames:
                        t = _frame_time(frame, decoded, rate)
                        decoded += 1
                        if t is None or t < next_k / fps - _TIME_EPSILON:
                            continue
                        try:
                            image = frame.to_image(**convert)
                        except (av.FFmpegError, ValueError, OSError) as err:
                            corrupt += 1
                            logger.debug("%s: skipping a frame at %.3fs that does not convert: %s", name, t, err)
                            continue
                        yield SampledFrame(next_k, t, image.convert("RGB") if image.mode != "RGB" else image)
                        kept += 1
                        next_k = max(next_k + 1, math.floor((t + _TIME_EPSILON) * fps) + 1)
                        if self.max_frames is not None and kept >= self.max_frames:
                            break
                    if self.max_frames is not None and kept >= self.max_frames:
                        break
            except (av.FFmpegError, OSError) as err:  # the demuxer gave up mid-file: keep what we have
                corrupt += 1
                logger.debug("%s: demuxing stopped early: %s", name, err)
            self.info = DecodeInfo(decoded, corrupt, int(stream.codec_context.width or 0),
                                   int(stream.codec_context.height or 0), duration)
        if not kept:
            raise VideoError("no_frames", f"{name}: no decodable frames ({decoded} decoded, {corrupt} corrupt "
                             "packets)")


def sample_frames(path: str | os.PathLike, fps: float = 0.25,
                  max_frames: int | None = None) -> tuple[list[SampledFrame], DecodeInfo]:
    """Decodes ``path`` front to back and keeps one frame per ``1 / fps`` seconds (the first at t = 0).

    Raises :class:`VideoError` with reason ``"unreadable"`` (not a media file), ``"no_video_stream"`` or
    ``"no_frames"`` (nothing decodable, e.g. a zero-length video). ``max_frames`` stops after that many kept frames.
    The whole list is in memory: long videos should iterate a :class:`FrameSampler` instead.
    """
    sampler = FrameSampler(path, fps, max_frames)
    frames = list(sampler)
    return frames, sampler.info


def write_synthetic_video(path: str | os.PathLike, seconds: float, fps: int = 8, size: tuple[int, int] = (64, 48),
                          colour: tuple[int, int, int] = (230, 40, 40), seed: int = 0, codec: str = "mpeg4") -> str:
    """Writes a coloured square moving left to right over a flat background, ``seconds`` long at ``fps`` (for tests
    and benchmarks: no video files ship with the project)."""
    import av
    import numpy as np

    w, h = size
    rng = np.random.default_rng(seed)
    background = (rng.random(3) * 120).astype(np.uint8)
    side = max(4, min(w, h) // 3)
    frames = round(seconds * fps)
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            array = np.empty((h, w, 3), np.uint8)
            array[:] = background
            x = int((w - side) * i / max(1, frames - 1))
            y = (h - side) // 2 + int(3 * np.sin(i / 3))
            array[y:y + side, x:x + side] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return os.fspath(path)
