"""Evaluate a set of generated stories: per-story metrics, FID over the set, and one summary row.

Metric definitions are in :mod:`lay2story_core.eval.consistency` (CLIP-I, DreamSim, Recall@1) and
:mod:`lay2story_core.eval.fid`. Every backbone comes from a local folder; each result records which backbones and
which FID feature extractor produced it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .consistency import clip_i_score, dreamsim_score, recall_at_1, subject_crops
from .fid import EmbedderFeatures, FeatureStats, InceptionFeatures, fid_from_stats
from .story_set import FRAME_SUFFIXES, EvalInputError, StoryEntry, load_generated_frames, read_generation_stats

logger = logging.getLogger(__name__)

__all__ = ["MetricModels", "evaluate_set", "evaluate_story", "list_real_images", "summary_row"]

_CHUNK = 32


@dataclass
class MetricModels:
    """The metric backbones of one evaluation; any may be ``None`` (its metrics are then skipped)."""

    clip: Any | None = None  # ClipEmbedder-like: embed_images / embed_texts
    clip_name: str | None = None
    dreamsim: Any | None = None  # DreamSimEnsemble-like: pairwise_distance, variant
    fid_extractor: Callable[[Sequence[Image.Image]], torch.Tensor] | None = None

    @classmethod
    def load(
        cls,
        *,
        clip: str | os.PathLike | None = None,
        dreamsim: str | os.PathLike | None = None,
        inception: str | os.PathLike | None = None,
        device: str | torch.device | None = "cpu",
    ) -> MetricModels:
        """Load the backbones from local folders. Without ``inception``, FID falls back to CLIP image features
        (recorded as ``clip[<folder>]``; not comparable to published FID)."""
        clip_model = dreamsim_model = extractor = None
        clip_name = None
        if clip is not None:
            from ..vision.clip import ClipEmbedder

            clip_model = ClipEmbedder.from_pretrained(clip, device=device)
            clip_name = Path(clip).name
        if dreamsim is not None:
            from .dreamsim import DreamSimEnsemble

            dreamsim_model = DreamSimEnsemble.from_pretrained(dreamsim).to(device)
        if inception is not None:
            from .inception import load_fid_inception

            extractor = InceptionFeatures(load_fid_inception(inception).to(device))
        elif clip_model is not None:
            extractor = EmbedderFeatures(clip_model.embed_images, name=f"clip[{clip_name}]")
        return cls(clip=clip_model, clip_name=clip_name, dreamsim=dreamsim_model, fid_extractor=extractor)

    def describe(self) -> dict:
        return {
            "clip": self.clip_name if self.clip is not None else None,
            "dreamsim": getattr(self.dreamsim, "variant", None) if self.dreamsim is not None else None,
            "fid_extractor": getattr(self.fid_extractor, "name", None) if self.fid_extractor is not None else None,
        }


def evaluate_story(story: Any, frames: Sequence[Image.Image], models: MetricModels, *,
                   masks: Sequence[Any] | None = None, use_boxes: bool = True) -> dict:
    """CLIP-I, DreamSim and Recall@1 of one story (keys present only for the loaded backbones)."""
    if len(frames) != story.num_frames:
        raise EvalInputError(f"frames: the story has {story.num_frames} frames, got {len(frames)} images")
    out: dict = {"frames": len(frames)}
    if models.clip is None and models.dreamsim is None:
        return out
    crops = subject_crops(story, frames, masks, use_boxes=use_boxes)
    out["characters"] = len(crops)
    if models.clip is not None:
        out["clip_i"] = clip_i_score(models.clip, crops)
        if getattr(models.clip, "tokenizer", True) is not None:
            rec = recall_at_1(models.clip, frames, [f.prompt for f in story.frames])
            out["recall_hits"], out["recall_total"] = rec["hits"], rec["total"]
    if models.dreamsim is not None:
        out["dreamsim"] = dreamsim_score(models.dreamsim, crops)
    return out


def list_real_images(folder: str | os.PathLike) -> list[Path]:
    """All images (recursively) under ``folder``, sorted: the real set for FID."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"real: folder {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"real: no images ({', '.join(FRAME_SUFFIXES)}) under {str(root)!r}")
    return files


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise EvalInputError(f"{path}: cannot read image: {err}") from err


def _features_of_paths(extractor, paths: Sequence[Path]) -> torch.Tensor:
    chunks = [extractor([_open(p) for p in paths[i : i + _CHUNK]]) for i in range(0, len(paths), _CHUNK)]
    return torch.cat(chunks)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(sum(vals) / len(vals)) if vals else None


def evaluate_set(
    entries: Sequence[StoryEntry],
    generated: str | os.PathLike,
    models: MetricModels,
    *,
    real: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    method: str = "ours",
    use_boxes: bool = True,
) -> dict:
    """Evaluate every story of ``entries`` against ``generated/<name>/frame_NNN.png``.

    FID compares all generated frames with ``real`` (a folder, searched recursively, or a list of image files);
    without it, with the stories' ground-truth ``frame.image`` paths when every frame has one; else it is skipped
    (noted in ``notes``). Returns ``{"stories": [...], "summary": {...}, "models": {...}, "notes": [...]}``.
    """
    if not entries:
        raise EvalInputError("stories: nothing to evaluate (empty story list)")
    generated = Path(generated)
    if not generated.is_dir():
        raise FileNotFoundError(f"generated: folder {str(generated)!r} does not exist")
    notes: list[str] = []
    per_story, gen_feats, gt_paths = [], [], []
    for entry in entries:
        frames = load_generated_frames(generated, entry.name, entry.story.num_frames)
        result = {"name": entry.name, **evaluate_story(entry.story, frames, models, use_boxes=use_boxes)}
        result.update(read_generation_stats(generated / entry.name) or {})
        per_story.append(result)
        if models.fid_extractor is not None:
            gen_feats.append(models.fid_extractor(frames))
        gt_paths.extend(Path(f.image) if f.image else None for f in entry.story.frames)
        logger.info("evaluated %s: %s", entry.name, result)

    fid = None
    if models.fid_extractor is not None:
        if real is not None:
            real_paths = list_real_images(real) if isinstance(real, (str, os.PathLike)) else [Path(p) for p in real]
        elif gt_paths and all(p is not None for p in gt_paths):
            real_paths = gt_paths
            missing = [p for p in real_paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"real: {len(missing)} ground-truth frame image(s) named by the stories are "
                                        f"missing, e.g. {str(missing[0])!r}")
        else:
            real_paths = []
            notes.append("FID skipped: no --real folder and not every story frame has a ground-truth image")
        if real_paths:
            gen = FeatureStats.from_features(torch.cat(gen_feats))
            ref = FeatureStats.from_features(_features_of_paths(models.fid_extractor, real_paths))
            fid = {"fid": fid_from_stats(gen, ref),
                   "extractor": getattr(models.fid_extractor, "name", "?"),
                   "n_generated": gen.count, "n_real": ref.count}
            if gen.count < 2048 or ref.count < 2048:
                notes.append(f"FID on {gen.count} generated / {ref.count} real images: strongly biased upwards below "
                             "a few thousand images; not comparable with the paper")
    described = models.describe()
    if described["dreamsim"]:
        notes.append(f"DreamSim = {described['dreamsim']}: the ensemble recipe without DreamSim's LoRA fine-tuning; "
                     "not the published DreamSim metric")
    if models.clip is not None:
        notes.append("CLIP-I/DreamSim on box crops (no CarveKit background removal; see lay2story_core.eval)")
    summary = summary_row(per_story, fid, method=method)
    return {"stories": per_story, "summary": summary, "fid": fid, "models": described, "notes": notes}


def summary_row(per_story: Sequence[dict], fid: dict | None, *, method: str = "ours") -> dict:
    """One table row: means over stories (CLIP-I, DreamSim, seconds), Recall@1 over all prompts, max peak memory."""
    hits = sum(s.get("recall_hits", 0) for s in per_story)
    total = sum(s.get("recall_total", 0) for s in per_story)
    peaks = [s["peak_memory_bytes"] for s in per_story if s.get("peak_memory_bytes") is not None]
    return {
        "method": method,
        "dreamsim": _mean(s.get("dreamsim") for s in per_story),
        "clip_i": _mean(s.get("clip_i") for s in per_story),
        "fid": fid["fid"] if fid else None,
        "recall_at_1": hits / total if total else None,
        "seconds_per_story": _mean(s.get("seconds") for s in per_story),
        "peak_memory_gb": max(peaks) / 1e9 if peaks else None,
        "stories": len(per_story),
        "frames": sum(s["frames"] for s in per_story),
        "source": "measured",
    }
