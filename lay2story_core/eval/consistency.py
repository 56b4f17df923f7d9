"""Story consistency and text alignment: subject crops, CLIP-I, DreamSim consistency, Recall@1.

Definitions used here (the paper names the metrics but not every detail; these are our documented choices):

- **Subject crops**: for every frame, each subject of the story's layout is cropped to its box (a frame or subject
  without a box gives the whole frame); with a foreground mask the background is painted white. The paper removed
  backgrounds with CarveKit; we have no segmenter, so without masks the crop keeps the box's background (see
  :func:`~lay2story_core.eval.images.crop_subject`).
- **CLIP-I** (higher = more consistent): for each character, the mean cosine similarity of the CLIP image
  embeddings of its crops over all frame pairs ``i < j``; a story's value is the mean over its characters that
  appear in at least two frames.
- **DreamSim** (lower = more consistent): the same pairs and averaging with the DreamSim distance ``1 - cos``.
- **Recall@1** (higher = better text alignment): text-to-image retrieval inside one story. Each frame's prompt
  (the frame prompt alone, without the identity text every frame shares, so the query carries what differs) is
  embedded with CLIP and compared with the CLIP embeddings of all the story's full frames; a hit is when the
  frame generated from that prompt ranks first. Chance level is ``1 / frames``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from PIL import Image

from .images import crop_subject

logger = logging.getLogger(__name__)

__all__ = [
    "ImageEmbedder",
    "TextImageEmbedder",
    "clip_i_score",
    "dreamsim_score",
    "mean_pairwise_cosine",
    "recall_at_1",
    "subject_crops",
]


class ImageEmbedder(Protocol):
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor: ...


class TextImageEmbedder(ImageEmbedder, Protocol):
    def embed_texts(self, texts: list[str]) -> torch.Tensor: ...


def subject_crops(
    story: Any,
    frames: Sequence[Image.Image],
    masks: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    use_boxes: bool = True,
) -> dict[str, list[Image.Image]]:
    """``{character id: [crop per frame where it appears]}`` for a ``lay2story_core.story.Story``.

    ``masks``: optional, one entry per frame: ``None`` or ``{character id: full-frame foreground mask}``.
    ``use_boxes=False`` crops nothing (every subject gets the full frame), e.g. for a layout-free run.
    """
    if len(frames) != story.num_frames:
        raise ValueError(f"frames: the story has {story.num_frames} frames, got {len(frames)} images")
    if masks is not None and len(masks) != len(frames):
        raise ValueError(f"masks: expected {len(frames)} entries (one per frame), got {len(masks)}")
    crops: dict[str, list[Image.Image]] = {}
    for index, image in enumerate(frames):
        frame_masks = masks[index] if masks is not None else None
        for subject in story.resolve_frame(index, boxes=use_boxes):
            box = subject.box if subject.has_box else None
            mask = frame_masks.get(subject.character) if frame_masks else None
            crops.setdefault(subject.character, []).append(crop_subject(image, box, mask))
    return crops


def mean_pairwise_cosine(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs ``i < j`` of the rows of ``embeddings`` (``n >= 2``)."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"embeddings: need an (n >= 2, d) matrix, got shape {tuple(embeddings.shape)}")
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    sims = e @ e.T
    n = e.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    return float(sims[iu[0], iu[1]].mean())


def _per_character(crops_by_character: Mapping[str, Sequence[Image.Image]], fn) -> float | None:
    values = []
    for character, crops in crops_by_character.items():
        if len(crops) < 2:
            logger.debug("character %r appears in %d frame(s); skipped for consistency", character, len(crops))
            continue
        values.append(fn(list(crops)))
    return float(sum(values) / len(values)) if values else None


def clip_i_score(embedder: ImageEmbedder, crops_by_character: Mapping[str, Sequence[Image.Image]]) -> float | None:
    """CLIP-I of one story (see the module doc); ``None`` when no character appears in two frames."""
    return _per_character(crops_by_character, lambda crops: mean_pairwise_cosine(embedder.embed_images(crops)))


def dreamsim_score(model: Any, crops_by_character: Mapping[str, Sequence[Image.Image]]) -> float | None:
    """DreamSim consistency of one story: mean pairwise distance of each character's crops, averaged over
    characters. ``model`` is a :class:`~lay2story_core.eval.dreamsim.DreamSimEnsemble` (anything with
    ``pairwise_distance(images) -> (n, n)``)."""

    def mean_distance(crops: list[Image.Image]) -> float:
        dist = model.pairwise_distance(crops)
        iu = torch.triu_indices(len(crops), len(crops), offset=1)
        return float(dist[iu[0], iu[1]].mean())

    return _per_character(crops_by_character, mean_distance)


def recall_at_1(embedder: TextImageEmbedder, frames: Sequence[Image.Image], prompts: Sequence[str], *,
                tie_margin: float = 1e-5) -> dict:
    """Text-to-image Recall@1 of one story. Returns ``{"hits", "total", "recall", "top1"}`` where ``top1[i]`` is
    the frame retrieved for prompt ``i``. A hit needs the prompt's own frame to score strictly higher than every
    other frame by more than ``tie_margin`` (cosine units): ties are misses, so a story of identical frames scores 0,
    not 1/n."""
    if len(frames) != len(prompts):
        raise ValueError(f"prompts: expected {len(frames)} prompts (one per frame), got {len(prompts)}")
    if len(frames) == 0:
        raise ValueError("frames: need at least one frame")
    image_emb = torch.nn.functional.normalize(torch.as_tensor(embedder.embed_images(list(frames))).float(), dim=-1)
    text_emb = torch.nn.functional.normalize(torch.as_tensor(embedder.embed_texts(list(prompts))).float(), dim=-1)
    sims = text_emb @ image_emb.T  # (prompts, frames)
    top1 = [int(row.argmax()) for row in sims]
    n = len(prompts)
    others = sims.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    # Identical images embed identically only up to float noise across batch positions: a margin makes ties misses.
    hits = int((sims.diagonal() > others.max(dim=1).values + tie_margin).sum()) if n > 1 else n
    return {"hits": hits, "total": len(prompts), "recall": hits / len(prompts), "top1": top1}
