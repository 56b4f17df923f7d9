"""One video through the recipe, as stage functions shared by both engines (one implementation of each stage):

1. :func:`decode_chunks` (CPU): sample at --fps, drop frames below --min-size, in chunks of --batch-size frames;
2. :func:`screen_chunk` (CLIP model): filter hooks (safety, user hooks), CLIP embeddings, the aesthetic head on them;
3. :func:`detect_chunk` (Grounding DINO): the top box of --prompt, kept if it reaches --box-threshold;
4. :class:`WindowDedup` (CPU): k-means per --window detected frames, the frame nearest each centre kept;
5. :func:`plan_sequences` + :func:`caption_sequences` (captioner) + :func:`write_stories` (CPU): 4/5/6-frame groups,
   references, captions, the frame images under ``out/images/<video-id>/`` and one Story JSON line per sequence.

:func:`process_video` chains them in one process, streaming (memory holds one k-means window); the Ray engine
(:mod:`training.data.ray_engine`) runs each stage on its own worker pool. The model stages work on one chunk at a time
in both engines, so every model call sees the same batch either way.

Bad inputs never raise: the result carries a status (``"ok"`` or the reason counted in the stats). The only error
that escapes is a fatal :class:`~training.data.captions.CaptionError` (e.g. a rejected API key), which would fail
every later video the same way.
"""

from __future__ import annotations

import contextlib
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

from .captions import Captioner, CaptionError, SequenceCaptions
from .config import BuildConfig
from .grouping import group_frames, pick_reference
from .kmeans import dedup_windows
from .video import FrameSampler, SampledFrame, VideoError

__all__ = ["CHARACTER_ID", "STAGES", "Candidate", "Models", "VideoResult", "VideoTask", "WindowDedup",
           "build_captioner", "caption_sequences", "check_model_paths", "check_screened", "decode_chunks",
           "detect_chunk", "guard", "load_models", "plan_sequences", "process_video", "screen_chunk", "video_seed",
           "write_stories"]

logger = logging.getLogger(__name__)

CHARACTER_ID = "main"
STAGES = ("sampled", "size_filtered", "filtered", "detected", "deduplicated", "grouped")
_MIN_BOX_SIDE = 1e-3  # boxes thinner than this (after rounding) count as no detection
_BOX_DIGITS = 4
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class VideoTask:
    """A video to process: its id (unique in the dataset), its local path (``None`` until fetched), its name in the
    input (path relative to ``--videos``, or the line of ``--video-list``) and, for list entries, the id or URL the
    fetcher downloads."""

    video_id: str
    path: str | None
    rel_path: str
    source: str | None = None


@dataclass
class Models:
    """What a worker loads: detector, CLIP embedder, captioner, the filter hooks and the aesthetic head (any may be
    ``None`` where a worker runs stages that do not need it)."""

    detector: object
    clip: object
    captioner: Captioner | None
    filters: tuple = ()
    aesthetic: object = None


@dataclass
class Candidate:
    """A frame on its way through the model stages: its CLIP embedding, then its box."""

    frame: SampledFrame
    embedding: np.ndarray
    box: Box | None = None


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


# ---------------------------------------------------------------------------------------------------------- models
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


def load_models(config: BuildConfig, parts: Iterable[str] = ("screen", "detect", "caption")) -> Models:
    """The models of the stages in ``parts`` (``screen``: CLIP, filter hooks, aesthetic head and safety checker;
    ``detect``: Grounding DINO; ``caption``: the captioner), the others ``None``."""
    from lay2story_core.vision import ClipEmbedder, GroundingDinoDetector

    from .filters import EmbeddingAestheticFilter, SafetyFilter, build_filter

    parts = set(parts)
    device = config.device or "cpu"
    models = Models(None, None, None)
    if "screen" in parts:
        models.clip = ClipEmbedder.from_pretrained(config.clip, device=device)
        hooks = [build_filter(spec) for spec in config.filters]
        if config.safety_checker:
            hooks.append(SafetyFilter.from_options(config.safety_checker, device=device,
                                                   adjustment=config.safety_adjustment))
        models.filters = tuple(hooks)
        if config.aesthetic_head:
            models.aesthetic = EmbeddingAestheticFilter.from_file(config.aesthetic_head, config.min_aesthetic,
                                                                  dim=models.clip.dim)
    if "detect" in parts:
        models.detector = GroundingDinoDetector.from_pretrained(config.detector, device=device)
    if "caption" in parts:
        models.captioner = build_captioner(config)
    return models


def check_model_paths(config: BuildConfig) -> None:
    """Raises ``FileNotFoundError`` naming the field when a model path of ``config`` is missing: checked before a
    build starts (a Ray actor that cannot load its model would otherwise keep failing to start)."""
    from lay2story_core.vision._common import check_model_folder

    check_model_folder(config.detector, "detector")
    check_model_folder(config.clip, "clip")
    for name in ("aesthetic_head", "safety_checker"):
        path = getattr(config, name)
        if path and not os.path.exists(path):
            raise FileNotFoundError(f"{name}: {path!r} does not exist")


def video_seed(seed: int, video_id: str) -> int:
    """A per-video seed that depends only on the global seed and the video id (not on worker or order)."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextlib.contextmanager
def guard(result: VideoResult, name: str) -> Iterator[None]:
    """Turns what goes wrong with one video into its status (never raises but for a fatal caption error)."""
    try:
        yield
    except VideoError as err:
        result.status, result.detail = err.reason, err.detail
        logger.info("skipped %s: %s", name, err)
    except CaptionError as err:
        if err.fatal:
            raise
        result.status, result.detail = "caption_failed", str(err)
    except Exception as err:  # a bad video must never stop the build: count it, keep the traceback in the log
        logger.exception("failed on %s", name)
        result.status, result.detail = "error", f"{type(err).__name__}: {err}"
    if result.status != "ok":
        result.stories = []


# ---------------------------------------------------------------------------------------------------------- stages
def decode_chunks(path: str, config: BuildConfig, result: VideoResult) -> Iterator[list[SampledFrame]]:
    """Stage 1: the frames sampled at ``config.fps`` that pass the size filter, in chunks of (at most)
    ``batch_size`` consecutive samples; raises :class:`VideoError` once done when no frame was large enough."""
    if os.path.getsize(path) == 0:
        raise VideoError("empty_file", f"{path}: zero bytes")
    sampler = FrameSampler(path, config.fps, config.max_frames_per_video)
    shorter_side = None
    batch: list[SampledFrame] = []

    def take() -> list[SampledFrame]:
        nonlocal shorter_side
        result.frames["sampled"] += len(batch)
        shorter_side = shorter_side or min(batch[0].image.size)
        kept = [f for f in batch if min(f.image.size) >= config.min_size]
        result.frames["size_filtered"] += len(kept)
        batch.clear()
        return kept

    for frame in sampler:
        batch.append(frame)
        if len(batch) == config.batch_size and (kept := take()):
            yield kept
    if batch and (kept := take()):
        yield kept
    result.corrupt = sampler.info.corrupt if sampler.info else 0
    if not result.frames["size_filtered"]:
        raise VideoError("too_small", f"shorter side {shorter_side} < --min-size {config.min_size}")


def screen_chunk(frames: list[SampledFrame], config: BuildConfig, models: Models,
                 result: VideoResult) -> list[Candidate]:
    """Stage 2: filter hooks, CLIP embeddings of the frames that pass, then the aesthetic head on those embeddings."""
    for hook in models.filters:
        if not frames:
            break
        keep = hook([f.image for f in frames])
        result.filtered_by[hook.name] = result.filtered_by.get(hook.name, 0) + sum(not k for k in keep)
        frames = [f for f, k in zip(frames, keep) if k]
    if not frames:
        return []
    embeddings = models.clip.embed_images([f.image for f in frames], batch_size=config.batch_size).numpy()
    candidates = [Candidate(f, e) for f, e in zip(frames, embeddings)]
    if models.aesthetic is not None:
        keep = models.aesthetic.keep(embeddings)
        name = models.aesthetic.name
        result.filtered_by[name] = result.filtered_by.get(name, 0) + sum(not k for k in keep)
        candidates = [c for c, k in zip(candidates, keep) if k]
    result.frames["filtered"] += len(candidates)
    return candidates


def _round_box(box) -> Box | None:
    x0, y0, x1, y1 = (round(min(max(float(v), 0.0), 1.0), _BOX_DIGITS) for v in box)
    if x1 - x0 < _MIN_BOX_SIDE or y1 - y0 < _MIN_BOX_SIDE:
        return None
    return (x0, y0, x1, y1)


def detect_chunk(candidates: list[Candidate], config: BuildConfig, models: Models,
                 result: VideoResult) -> list[Candidate]:
    """Stage 3: the candidates whose top ``config.prompt`` box reaches ``box_threshold``, with that box."""
    if not candidates:
        return []
    detections = models.detector.detect([c.frame.image for c in candidates], config.prompt, config.box_threshold,
                                        config.text_threshold, batch_size=config.batch_size)
    found = []
    for candidate, detection in zip(candidates, detections):
        box = None if detection is None else _round_box(detection.box)
        if box is not None:
            found.append(dataclasses.replace(candidate, box=box))
    result.frames["detected"] += len(found)
    return found


def check_screened(result: VideoResult, config: BuildConfig) -> None:
    """After stages 2-3 of a whole video: a video with nothing left fails with its reason."""
    if not result.frames["filtered"]:
        raise VideoError("filtered", f"every frame was dropped by the filters {list(result.filtered_by)}")
    if not result.frames["detected"]:
        raise VideoError("no_detection", f"no {config.prompt!r} box reached --box-threshold {config.box_threshold}")


class WindowDedup:
    """Stage 4, fed detected frames in time order: k-means over each ``config.window`` of them (seeded per window),
    keeping the frame nearest each centre. Holds one window at a time."""

    def __init__(self, config: BuildConfig, seed: int) -> None:
        self.config, self.seed = config, seed
        self.window: list[Candidate] = []
        self.kept: list[Candidate] = []
        self.windows = 0

    def _flush(self) -> None:
        embeddings = np.stack([c.embedding for c in self.window])
        chosen = dedup_windows(embeddings, len(self.window), self.config.clusters,
                               seed=(self.seed + self.windows) % 2**31)
        self.kept.extend(self.window[i] for i in chosen)
        self.window.clear()
        self.windows += 1

    def add(self, candidates: Iterable[Candidate]) -> None:
        for candidate in candidates:
            self.window.append(candidate)
            if len(self.window) == self.config.window:
                self._flush()

    def finish(self, result: VideoResult) -> list[Candidate]:
        if self.window:
            self._flush()
        result.frames["deduplicated"] = len(self.kept)
        return self.kept


def plan_sequences(video_id: str, kept: list[Candidate], config: BuildConfig,
                   result: VideoResult) -> list[tuple[list[int], int | None]]:
    """Stage 5a: the kept frames (indices into ``kept``) cut into 4/5/6-frame groups, each with its reference."""
    indices = list(range(len(kept)))
    groups = group_frames(indices, np.random.default_rng(video_seed(config.seed, video_id)), config.lengths,
                          config.length_probs)
    result.frames["grouped"] = sum(len(g) for g in groups)
    if not groups:
        raise VideoError("too_few_frames", f"{len(kept)} frames after de-duplication, fewer than "
                         f"{min(config.lengths)}")
    times = [c.frame.time for c in kept]
    return [(group, pick_reference(group, indices, times)) for group in groups]


def caption_sequences(kept: list[Candidate], plans: list[tuple[list[int], int | None]], captioner: Captioner,
                      result: VideoResult, name: str) -> list[tuple[list[int], int | None, SequenceCaptions]]:
    """Stage 5b: captions per group; a group the captioner cannot caption is counted and dropped."""
    captioned = []
    for group, ref in plans:
        try:
            captions = captioner.caption([kept[i].frame.image for i in group], [kept[i].box for i in group])
        except CaptionError as err:
            if err.fatal:
                raise
            result.caption_failed += 1
            logger.warning("%s: a %d-frame sequence was not captioned: %s", name, len(group), err)
            continue
        if len(captions.frame_prompts) != len(group):
            result.caption_failed += 1
            logger.warning("%s: the captioner returned %d frame prompts for %d frames", name,
                           len(captions.frame_prompts), len(group))
            continue
        captioned.append((group, ref, captions))
    if not captioned:
        raise VideoError("caption_failed", f"none of the {len(plans)} sequences could be captioned")
    return captioned


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


def write_stories(video_id: str, kept: list[Candidate], captioned: list[tuple[list[int], int | None,
                  SequenceCaptions]], config: BuildConfig, result: VideoResult) -> None:
    """Stage 5c: the images of the frames in use, and one Story JSON line per captioned sequence."""
    used = {i for group, ref, _ in captioned for i in (*group, *(() if ref is None else (ref,)))}
    paths = _write_images(config.out, video_id, {i: kept[i].frame for i in used}, config)
    width, height = _story_size(*kept[captioned[0][0][0]].frame.image.size)
    for group, ref, captions in captioned:
        reference = None if ref is None else Reference(image=paths[ref], box=kept[ref].box)
        result.without_reference += reference is None
        story = Story(
            characters=(Character(CHARACTER_ID, captions.identity, reference),),
            frames=tuple(
                Frame(prompt, (Subject(CHARACTER_ID, kept[i].box, subject),), image=paths[i])
                for i, prompt, subject in zip(group, captions.frame_prompts, captions.subject_captions)
            ),
            width=width,
            height=height,
        )
        key = str(len(group))
        result.sequences[key] = result.sequences.get(key, 0) + 1
        result.stories.append(json.dumps(story.to_dict(), ensure_ascii=False, separators=(",", ":")))


# ------------------------------------------------------------------------------------------------- one process
def process_video(task: VideoTask, config: BuildConfig, models: Models, fetcher=None) -> VideoResult:
    """Runs every stage on one video in this process (``fetcher`` downloads list entries; see
    :mod:`training.data.fetch`). Never raises for bad input (see the module docstring)."""
    from .fetch import local_copy

    result = VideoResult(task.video_id, task.rel_path)
    with guard(result, task.rel_path), local_copy(task, config, fetcher) as path:
        dedup = WindowDedup(config, video_seed(config.seed, task.video_id))
        for chunk in decode_chunks(path, config, result):
            dedup.add(detect_chunk(screen_chunk(chunk, config, models, result), config, models, result))
        check_screened(result, config)
        kept = dedup.finish(result)
        plans = plan_sequences(task.video_id, kept, config, result)
        captioned = caption_sequences(kept, plans, models.captioner, result, task.rel_path)
        write_stories(task.video_id, kept, captioned, config, result)
    return result
