"""One video through the recipe: sample -> size filter -> filter hooks -> detect -> de-duplicate -> group -> caption
-> stories (+ the frame images written under ``out/images/<video-id>/``).

Bad inputs never raise: the result carries a status (``"ok"`` or the reason counted in the stats). The only error
that escapes is a fatal :class:`~training.data.captions.CaptionError` (e.g. a rejected API key), which would fail
every later video the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from lay2story_core.story import Character, Frame, Reference, Story, Subject

from .captions import Captioner, CaptionError
from .config import BuildConfig
from .grouping import group_frames, pick_reference
from .kmeans import dedup_windows
from .video import FrameSampler, SampledFrame, VideoError

__all__ = ["CHARACTER_ID", "STAGES", "Models", "VideoResult", "VideoTask", "build_captioner", "load_models",
           "process_video", "video_seed"]

logger = logging.getLogger(__name__)

CHARACTER_ID = "main"
STAGES = ("sampled", "size_filtered", "filtered", "detected", "deduplicated", "grouped")
_MIN_BOX_SIDE = 1e-3  # boxes thinner than this (after rounding) count as no detection
_BOX_DIGITS = 4
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class VideoTask:
    """A video to process: its id (unique in the dataset), absolute path, and path relative to ``--videos``."""

    video_id: str
    path: str
    rel_path: str


@dataclass
class Models:
    """What a worker loads once: detector, CLIP embedder, captioner and the filter hooks."""

    detector: object
    clip: object
    captioner: Captioner
    filters: tuple = ()


@dataclass
class VideoResult:
    """The outcome of one video; ``stories`` are JSON lines with image paths relative to ``out/shards/``."""

    video_id: str
    rel_path: str
    status: str = "ok"
    detail: str = ""
    frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    filtered_by: dict[str, int] = field(default_factory=dict)
    corrupt: int = 0
    sequences: dict[str, int] = field(default_factory=dict)
    caption_failed: int = 0
    without_reference: int = 0
    stories: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """The manifest's record of this video (everything but the stories)."""
        data = dataclasses.asdict(self)
        data.pop("stories")
        data.pop("video_id")
        data["num_stories"] = len(self.stories)
        return data


def build_captioner(config: BuildConfig) -> Captioner:
    if config.captioner == "template":
        from .captions import TemplateCaptioner

        return TemplateCaptioner(config.identity)
    if config.captioner == "http":
        from .http_captioner import HttpCaptioner

        return HttpCaptioner(config.caption_url, model=config.caption_model or "gpt-4o-mini",
                             api_key_env=config.api_key_env, timeout=config.caption_timeout,
                             max_retries=config.caption_retries)
    from .transformers_captioner import TransformersCaptioner

    return TransformersCaptioner(config.caption_model, device=config.device)


def load_models(config: BuildConfig) -> Models:
    from lay2story_core.vision import ClipEmbedder, GroundingDinoDetector

    from .filters import build_filter

    return Models(
        detector=GroundingDinoDetector.from_pretrained(config.detector, device=config.device or "cpu"),
        clip=ClipEmbedder.from_pretrained(config.clip, device=config.device or "cpu"),
        captioner=build_captioner(config),
        filters=tuple(build_filter(spec) for spec in config.filters),
    )


def video_seed(seed: int, video_id: str) -> int:
    """A per-video seed that depends only on the global seed and the video id (not on worker or order)."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _round_box(box) -> tuple[float, float, float, float] | None:
    x0, y0, x1, y1 = (round(min(max(float(v), 0.0), 1.0), _BOX_DIGITS) for v in box)
    if x1 - x0 < _MIN_BOX_SIDE or y1 - y0 < _MIN_BOX_SIDE:
        return None
    return (x0, y0, x1, y1)


def _story_size(width: int, height: int) -> tuple[int, int]:
    def snap(v: int) -> int:
        return int(min(8192, max(8, round(v / 8) * 8)))

    return snap(width), snap(height)


def _write_images(out: str, video_id: str, frames: dict[int, SampledFrame], config: BuildConfig) -> dict[int, str]:
    """Writes the frames into a temporary folder, then swaps it in as ``out/images/<video_id>``; returns each frame's
    path relative to ``out/shards``."""
    images_root = os.path.join(out, "images")
    final = os.path.join(images_root, video_id)
    tmp = os.path.join(images_root, f".{video_id}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    ext = config.image_format
    names = {}
    for k, frame in sorted(frames.items()):
        name = f"{frame.index:06d}.{ext}"
        if ext == "jpg":
            frame.image.save(os.path.join(tmp, name), format="JPEG", quality=config.jpeg_quality)
        else:
            frame.image.save(os.path.join(tmp, name), format="PNG")
        names[k] = f"../images/{video_id}/{name}"
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    return names


def _batches(frames: Iterable[SampledFrame], size: int) -> Iterator[list[SampledFrame]]:
    batch: list[SampledFrame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _select_frames(task: VideoTask, config: BuildConfig, models: Models, result: VideoResult,
                   seed: int) -> list[tuple[SampledFrame, Box]]:
    """Streams the video through size filter, hooks, detection and windowed k-means; returns the kept frames with
    their boxes, in time order. Memory holds one window of detected frames, not the video."""
    sampler = FrameSampler(task.path, config.fps, config.max_frames_per_video)
    window: list[tuple[SampledFrame, Box]] = []
    kept: list[tuple[SampledFrame, Box]] = []
    windows = 0
    shorter_side = None

    def dedup() -> None:
        nonlocal windows
        embeddings = models.clip.embed_images([f.image for f, _ in window], batch_size=config.batch_size).numpy()
        # One window per call: k-means seeded per window, as dedup_windows does over a whole video.
        chosen = dedup_windows(embeddings, len(window), config.clusters, seed=(seed + windows) % 2**31)
        kept.extend(window[i] for i in chosen)
        window.clear()
        windows += 1

    for batch in _batches(sampler, config.batch_size):
        result.frames["sampled"] += len(batch)
        shorter_side = shorter_side or min(batch[0].image.size)
        frames = [f for f in batch if min(f.image.size) >= config.min_size]
        result.frames["size_filtered"] += len(frames)
        for hook in models.filters:
            if not frames:
                break
            keep = hook([f.image for f in frames])
            result.filtered_by[hook.name] = result.filtered_by.get(hook.name, 0) + sum(not k for k in keep)
            frames = [f for f, k in zip(frames, keep) if k]
        result.frames["filtered"] += len(frames)
        if not frames:
            continue
        detections = models.detector.detect([f.image for f in frames], config.prompt, config.box_threshold,
                                            config.text_threshold, batch_size=config.batch_size)
        for frame, detection in zip(frames, detections):
            box = None if detection is None else _round_box(detection.box)
            if box is None:
                continue
            result.frames["detected"] += 1
            window.append((frame, box))
            if len(window) == config.window:
                dedup()
    if window:
        dedup()
    result.corrupt = sampler.info.corrupt if sampler.info else 0
    if not result.frames["size_filtered"]:
        raise VideoError("too_small", f"shorter side {shorter_side} < --min-size {config.min_size}")
    if not result.frames["filtered"]:
        raise VideoError("filtered", f"every frame was dropped by the filters {list(result.filtered_by)}")
    if not result.frames["detected"]:
        raise VideoError("no_detection", f"no {config.prompt!r} box reached --box-threshold {config.box_threshold}")
    result.frames["deduplicated"] = len(kept)
    return kept


def _run(task: VideoTask, config: BuildConfig, models: Models, result: VideoResult) -> None:
    if os.path.getsize(task.path) == 0:
        raise VideoError("empty_file", f"{task.path}: zero bytes")
    seed = video_seed(config.seed, task.video_id)
    selected = _select_frames(task, config, models, result, seed)
    kept = list(range(len(selected)))
    groups = group_frames(kept, np.random.default_rng(seed), config.lengths, config.length_probs)
    result.frames["grouped"] = sum(len(g) for g in groups)
    if not groups:
        raise VideoError("too_few_frames", f"{len(kept)} frames after de-duplication, fewer than "
                         f"{min(config.lengths)}")
    times = [f.time for f, _ in selected]
    plans = []
    for group in groups:
        try:
            captions = models.captioner.caption([selected[i][0].image for i in group], [selected[i][1] for i in group])
        except CaptionError as err:
            if err.fatal:
                raise
            result.caption_failed += 1
            logger.warning("%s: a %d-frame sequence was not captioned: %s", task.rel_path, len(group), err)
            continue
        if len(captions.frame_prompts) != len(group):
            result.caption_failed += 1
            logger.warning("%s: the captioner returned %d frame prompts for %d frames", task.rel_path,
                           len(captions.frame_prompts), len(group))
            continue
        plans.append((group, pick_reference(group, kept, times), captions))
    if not plans:
        raise VideoError("caption_failed", f"none of the {len(groups)} sequences could be captioned")
    used = {i for group, ref, _ in plans for i in (*group, *(() if ref is None else (ref,)))}
    paths = _write_images(config.out, task.video_id, {i: selected[i][0] for i in used}, config)
    width, height = _story_size(*selected[plans[0][0][0]][0].image.size)
    for group, ref, captions in plans:
        reference = None if ref is None else Reference(image=paths[ref], box=selected[ref][1])
        result.without_reference += reference is None
        story = Story(
            characters=(Character(CHARACTER_ID, captions.identity, reference),),
            frames=tuple(
                Frame(prompt, (Subject(CHARACTER_ID, selected[i][1], subject),), image=paths[i])
                for i, prompt, subject in zip(group, captions.frame_prompts, captions.subject_captions)
            ),
            width=width,
            height=height,
        )
        key = str(len(group))
        result.sequences[key] = result.sequences.get(key, 0) + 1
        result.stories.append(json.dumps(story.to_dict(), ensure_ascii=False, separators=(",", ":")))


def process_video(task: VideoTask, config: BuildConfig, models: Models) -> VideoResult:
    """Runs the recipe on one video. Never raises for bad input (see the module docstring)."""
    result = VideoResult(task.video_id, task.rel_path)
    try:
        _run(task, config, models, result)
    except VideoError as err:
        result.status, result.detail = err.reason, err.detail
        logger.info("skipped %s: %s", task.rel_path, err)
    except CaptionError as err:
        if err.fatal:
            raise
        result.status, result.detail = "caption_failed", str(err)
    except Exception as err:  # a bad video must never stop the build: count it, keep the traceback in the log
        logger.exception("failed on %s", task.rel_path)
        result.status, result.detail = "error", f"{type(err).__name__}: {err}"
    if result.status != "ok":
        result.stories = []
    return result
