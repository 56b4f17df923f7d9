"""Auto layout: with layout off, the model places each character itself, and the subject branch then draws it in
that box.

Why (issue 24): the subject branch draws a character's outline and pattern through its box embedding (where each
token sits in its box). With layout off every subject has the full frame as its box, the embedding says nothing, and
the outline is left to the global branch, which on the demo cannot draw one (held-out, one character: shape 0.17 with
layout off against 0.97 with boxes; the plain global branch 0.15). Where a character goes is decided in the first
steps; its outline later. So a subject without a box is sampled in three moves:

1. **draft**: the first ``draft`` share of the steps, layout off (the branch with full-frame boxes and the reference,
   the layout dropout it was trained with), from the call's own initial noise;
2. **where**: at the draft's latents, per frame, the conditional prediction with the frame's caption minus the
   prediction with the caption as if that character were not there (DiffEdit, Couairon et al., ICLR 2023: the region a
   word changes is where its object is). The maps of a frame's characters are normalised to their maxima, each latent
   pixel goes to the character whose map is largest there, and a character's box is the bounding box of its pixels
   at or above ``threshold``. A given ``aspect`` (width / height; the demo's folder says 1: it was trained on square
   boxes) is taken about the box's centre; boxes of one frame that overlap are pushed apart, then shrunk, until
   disjoint, as the training's multi-character frames were;
3. **sample** the story again from the same initial noise and with the same step noise, the characters in these
   boxes: the frames equal a layout-on call with the placed story (``StoryPipelineOutput.story``, tested).

A model folder turns it on for its users in ``lay2story.json`` (``"auto_layout": {"draft": 0.25, ...}``); a call
chooses with ``auto_layout=`` (``True``: the folder's settings, else these defaults; ``False``: the paper's plain
"w/o lc"). Only ``mode="lay2story"`` places (the other modes have no branch to draw in a box). Cost: the draft's
steps and one model call per frame with a row per character, about 1.3x a story at the default share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch

from ..story import Story
from ..story.schema import Subject

__all__ = ["AUTO_LAYOUT_CHOICES", "AutoLayout", "boxes_from_maps", "check_auto_layout", "draft_maps",
           "place_subjects", "placed_story", "resolve_auto_layout", "separate_boxes", "unplaced"]

Box = tuple[float, float, float, float]
# the CLI's --auto-layout and the sampler node's auto_layout widget: name -> the pipeline's ``auto_layout=``
AUTO_LAYOUT_CHOICES: Mapping[str, bool | None] = MappingProxyType({"model": None, "on": True, "off": False})


@dataclass(frozen=True)
class AutoLayout:
    """Settings of auto layout (module docstring).

    Attributes:
        draft: share of the steps drafted with layout off before the boxes are read (at least one step, at most all
            but one).
        threshold: a latent pixel belongs to a character's box when its normalised map is at least this (0-1).
        aspect: width / height every placed box is given about its centre (``None``: the map's own).
        min_size, max_size: bounds of a placed box's longer side, as a share of the frame (``None``: none); e.g. the
            sizes the model was trained on (the demo: 0.4-0.65; a smaller character loses its outline in its VAE).
    """

    draft: float = 0.25
    threshold: float = 0.5
    aspect: float | None = 1.0
    min_size: float | None = None
    max_size: float | None = None

    def __post_init__(self) -> None:
        self.check("auto_layout")

    def check(self, where: str) -> AutoLayout:
        for name, low, high in (("draft", 0.0, 1.0), ("threshold", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise ValueError(f"{where}.{name}: expected a number in ({low:g}, {high:g}], got {value!r}")
        aspect = self.aspect
        if aspect is not None and (isinstance(aspect, bool) or not isinstance(aspect, (int, float))
                                   or not math.isfinite(aspect) or not 0.1 <= aspect <= 10.0):
            raise ValueError(f"{where}.aspect: expected a number in [0.1, 10] (width / height) or null, "
                             f"got {aspect!r}")
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 < value <= 1.0):
                raise ValueError(f"{where}.{name}: expected a number in (0, 1] (share of the frame) or null, "
                                 f"got {value!r}")
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise ValueError(f"{where}.min_size: {self.min_size!r} is above max_size {self.max_size!r}")
        return self

    def draft_steps(self, num_steps: int) -> int:
        """Steps drafted with layout off: ``draft`` of ``num_steps``, at least 1 and at most ``num_steps - 1``."""
        return max(1, min(num_steps - 1, round(self.draft * num_steps)))

    @classmethod
    def from_dict(cls, data: object, where: str = "auto_layout") -> AutoLayout:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(fields)})")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(str(err).replace("auto_layout.", f"{where}.", 1)) from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_auto_layout(value: object, field: str = "auto_layout") -> AutoLayout | bool | None:
    """The one rule for the ``auto_layout`` argument (API, CLI, node): ``None`` (the model folder's choice), a bool,
    or an :class:`AutoLayout`; ``ValueError`` naming ``field`` otherwise."""
    if value is None or isinstance(value, (bool, AutoLayout)):
        return value
    raise ValueError(f"{field}: expected True, False, None (the model's choice) or an AutoLayout, got {value!r}")


def resolve_auto_layout(value: AutoLayout | bool | None, default: AutoLayout | None) -> AutoLayout | None:
    """What a call runs: ``None`` -> the folder's ``default`` (``None``: off); ``False`` -> off; ``True`` -> the
    folder's settings, else :class:`AutoLayout`'s defaults; an :class:`AutoLayout` -> itself."""
    value = check_auto_layout(value)
    if value is None:
        return default
    if value is False:
        return None
    return default or AutoLayout() if value is True else value


def unplaced(resolved: Sequence[Sequence]) -> list[tuple[int, str]]:
    """``(frame, character)`` of every resolved subject without a box (``resolved``: ``Story.resolve_frame`` of
    each frame, as the call resolved them)."""
    return [(i, s.character) for i, frame in enumerate(resolved) for s in frame if not s.has_box]


def _shaped(box: list[float], aspect: float | None, min_size: float | None = None,
            max_size: float | None = None) -> list[float]:
    """``box`` grown (never shrunk) about its centre to ``aspect``, its longer side then scaled into
    ``[min_size, max_size]``, moved back inside the frame and cut to it."""
    w, h = box[2] - box[0], box[3] - box[1]
    if aspect is not None:
        w, h = max(w, h * aspect), max(h, w / aspect)
    side = max(w, h)
    bounded = min(max(side, min_size or 0.0), max_size or 1.0)
    if side > 0 and bounded != side:
        w, h = w * bounded / side, h * bounded / side
    w, h = min(w, 1.0), min(h, 1.0)
    cx = min(max((box[0] + box[2]) / 2, w / 2), 1 - w / 2)
    cy = min(max((box[1] + box[3]) / 2, h / 2), 1 - h / 2)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def boxes_from_maps(maps: torch.Tensor, threshold: float, aspect: float | None, min_size: float | None = None,
                    max_size: float | None = None) -> list[Box]:
    """``(n, h, w)`` maps of one frame's ``n`` characters (>= 0) -> ``n`` disjoint boxes (normalised xyxy).

    Each map is normalised to its maximum; a pixel goes to the character whose map is largest there; a character's
    box bounds its pixels at or above ``threshold`` (its whole thresholded map when it wins none), takes ``aspect``
    and a longer side in ``[min_size, max_size]``, and is kept apart from the others (:func:`separate_boxes`, which
    shrinks no box below ``min_size``)."""
    n, h, w = maps.shape
    norm = maps.float() / maps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    winner = norm.argmax(0)
    boxes = []
    for j in range(n):
        mine = norm[j] >= threshold
        won = mine & (winner == j)
        ys, xs = torch.nonzero(won if won.any() else mine, as_tuple=True)
        if len(ys) == 0:  # an all-zero map (the words changed nothing): the whole frame
            boxes.append([0.0, 0.0, 1.0, 1.0])
            continue
        box = [xs.min().item() / w, ys.min().item() / h, (xs.max().item() + 1) / w, (ys.max().item() + 1) / h]
        boxes.append(_shaped(box, aspect, min_size, max_size))
    return separate_boxes(boxes, min_size=min_size)


def _push_apart(a: list[float], b: list[float], axis: int, overlap: float) -> None:
    """Move ``a`` and ``b`` apart along ``axis`` (0: x, 1: y) by half ``overlap`` each, staying inside the frame."""
    first, second = (a, b) if a[axis] + a[axis + 2] <= b[axis] + b[axis + 2] else (b, a)
    shift = overlap / 2 + 1e-4
    for box, sign in ((first, -1.0), (second, 1.0)):
        size = box[axis + 2] - box[axis]
        low = min(max(box[axis] + sign * shift, 0.0), 1.0 - size)
        box[axis], box[axis + 2] = low, low + size


def _overlaps(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    return min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])


def separate_boxes(boxes: Sequence[Sequence[float]], rounds: int = 40, min_size: float | None = None) -> list[Box]:
    """Boxes of one frame pushed apart until disjoint: an overlapping pair moves apart along the axis where it
    overlaps least, half the overlap each, staying inside the frame (along the other axis when the frame's edge
    stops it); every fourth round that still has an overlap shrinks every box about its centre by 10% (not below
    ``min_size`` on its longer side). Disjoint boxes come back unchanged; boxes that cannot be parted within
    ``rounds`` come back as far apart as they got."""
    out = [list(map(float, b)) for b in boxes]
    for round_index in range(rounds):
        moved = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                overlap = _overlaps(a, b)
                if overlap[0] <= 0 or overlap[1] <= 0:
                    continue
                moved = True
                cheaper = 0 if overlap[0] < overlap[1] else 1
                before = (list(a), list(b))
                _push_apart(a, b, cheaper, overlap[cheaper])
                if min(_overlaps(a, b)) > 0:  # the frame's edge stopped them: the other axis instead
                    a[:], b[:] = before
                    _push_apart(a, b, 1 - cheaper, overlap[1 - cheaper])
                    if min(_overlaps(a, b)) > 0:  # neither parts them now: the cheaper push, shrinking follows
                        a[:], b[:] = before
                        _push_apart(a, b, cheaper, overlap[cheaper])
        if not moved:
            break
        if round_index % 4 == 3:
            for box in out:
                side = max(box[2] - box[0], box[3] - box[1])
                factor = max(0.9, min(1.0, (min_size or 0.0) / side)) if side > 0 else 1.0
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
                box[:] = [cx - hw, cy - hh, cx + hw, cy + hh]
    return [tuple(min(max(v, 0.0), 1.0) for v in box) for box in out]


def placed_story(story: Story, resolved: Sequence[Sequence], boxes: Mapping[tuple[int, str], Box]) -> Story:
    """``story`` with every resolved subject of ``boxes`` given its placed box; subjects the call resolved with a
    box keep it, subject captions stay as written (a frame without subjects lists every character)."""
    frames = []
    for i, frame in enumerate(story.frames):
        written = {s.character: s for s in frame.subjects}
        subjects = []
        for r in resolved[i]:
            old = written.get(r.character, Subject(r.character))
            box = boxes.get((i, r.character), old.box if r.has_box else None)
            subjects.append(Subject(r.character, box, old.caption))
        frames.append(dataclasses.replace(frame, subjects=tuple(subjects)))
    return dataclasses.replace(story, frames=tuple(frames))


def draft_maps(predict: Callable[[torch.Tensor, list[str]], torch.Tensor], story: Story, frames: Sequence[int],
               latents: torch.Tensor, caption_without: Callable[[int, str], str],
               characters: Mapping[int, Sequence[str]]) -> dict[int, torch.Tensor]:
    """Step 2's maps: for each frame of ``frames`` (rows of ``latents``, scaled for the model) with characters to
    place, ``(n, h, w)``: the mean absolute change of the conditional prediction (its first ``C`` channels) when
    each character is taken out of the caption. One ``predict(latents, captions) -> (B, C', h, w)`` call for all the
    frames: per frame, a row with its caption and one without each of its characters."""
    rows, captions, spans = [], [], {}
    for row, f in enumerate(frames):
        names = list(characters.get(f, ()))
        if names:
            spans[f] = (len(captions), len(names))
            rows += [row] * (1 + len(names))
            captions += [story.global_caption(f)] + [caption_without(f, c) for c in names]
    if not captions:
        return {}
    channels = latents.shape[1]
    pred = predict(latents[rows], captions)[:, :channels].float()
    return {f: (pred[start:start + 1] - pred[start + 1:start + 1 + n]).abs().mean(1)
            for f, (start, n) in spans.items()}


def _copy_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is None:
        return None
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return copy


@torch.no_grad()
def place_subjects(job, model, latents: torch.Tensor, auto: AutoLayout, to_place: Sequence[tuple[int, str]],
                   chunk_size: int | None, captions: bool) -> tuple[Story, list]:
    """Steps 1-2 for one pipeline call (``job``: the call's ``_Job``; ``latents``: every frame's initial noise):
    the placed story and its frames resolved with their boxes (subject captions as the call resolved them).

    The draft runs every ``chunk_size`` frames jointly (all at once without), on a copy of the call's generator, so
    the story sampled afterwards gets the step noise it would get without the draft."""
    from ..models import IdentityBank  # the models package is heavy: only a call that places imports it here

    story = job.story
    steps = auto.draft_steps(job.num_steps)
    draft = dataclasses.replace(job, callback=None, step_end=None, generator=_copy_generator(job.generator),
                                num_passes=1, bank=IdentityBank(), training_free_bank={})  # shares no state
    characters: dict[int, list[str]] = {}
    for f, c in to_place:
        characters.setdefault(f, []).append(c)
    frames_all = sorted(characters)
    size = chunk_size or len(frames_all)
    boxes: dict[tuple[int, str], Box] = {}
    for start in range(0, len(frames_all), size):
        frames = frames_all[start:start + size]
        model_in, t = draft.denoise(model, frames, latents[frames], "joint", 0, stop_after=steps)  # (F, C, h, w)

        def predict(x: torch.Tensor, texts: list[str], t=t) -> torch.Tensor:
            cond, mask = job._texts(texts)
            added = job.pipe._added_cond(len(texts), job.height, job.width, job.device, job.dtype)
            return model(x, cond, t.expand(len(texts)).to(job.device), added, mask).sample

        maps = draft_maps(predict, story, frames, model_in, lambda f, c: story.global_caption(f, without=(c,)),
                          characters)
        for f, frame_maps in maps.items():
            placed_boxes = boxes_from_maps(frame_maps, auto.threshold, auto.aspect, auto.min_size, auto.max_size)
            for c, box in zip(characters[f], placed_boxes):
                boxes[(f, c)] = box
    placed = placed_story(story, job.resolved, boxes)
    resolved = [placed.resolve_frame(i, boxes=True, captions=captions) for i in range(placed.num_frames)]
    return placed, resolved
