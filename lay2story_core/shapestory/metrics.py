"""ShapeStory metrics over generated images, with no learned judge.

For every subject of every frame:

- **box hit**: share of the character's pixels (:func:`segment.character_mask`: nearer its colours than the
  background) inside its requested box; a character with under ``PRESENT_SHARE`` of its expected area counts as
  absent and scores 0. ``box_success`` is the share of subjects with box hit >= ``hit_threshold`` (0.8, as in the
  calibration notes). ``mask_iou`` compares with the ground-truth render.
- **identity**: the character is found colour-blind (connected foreground blob of :func:`segment.label_palette`
  overlapping its box, other characters' colours removed), then its dominant colour, shape (nearest exemplar of a
  bbox occupancy grid) and pattern are read off. Accuracy compares with the identity text; consistency is the share
  of frame pairs of a story in which a character's (colour, shape) agree.
- **identity anywhere** (:func:`identity_anywhere`): in frames with two or more characters, a character counts as
  drawn when some blob anywhere in the frame has its colour, shape and pattern (no box asked: what a model without
  layout is judged by).
- **prompt following**: the frame's background (median of background pixels in the top and bottom quarter) is
  classified to the nearest ShapeStory scene and compared with the frame prompt.

Ground-truth renders score box hit 1.0, and identity and scene accuracy about 0.99 (tests check both).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from ..story import LayoutError, Story
from .descriptors import classify_pattern, classify_shape
from .generator import character_look, frame_scene, render_frame
from .segment import PaletteLabels, as_rgb_array, box_pixels, character_mask, components, label_palette
from .vocab import COLOURS, SceneSpec, all_scene_specs

__all__ = [
    "PRESENT_SHARE",
    "Identification",
    "StoryScore",
    "SubjectScore",
    "box_hit",
    "classify_scene",
    "drawn_identities",
    "identify",
    "identity_anywhere",
    "score_story",
    "summarize",
]

PRESENT_SHARE = 0.25
MIN_BLOB_PIXELS = 6
_COLOUR_NAMES = tuple(c.name for c in COLOURS)


@dataclass(frozen=True)
class Identification:
    """What a segmented character looks like (None: no character found)."""

    colour: str | None
    shape: str | None
    pattern: str | None
    pixels: int


@dataclass(frozen=True)
class SubjectScore:
    """One character in one frame. ``box_hit``/``mask_iou`` are None when the subject has no box."""

    frame: int
    character: str
    has_box: bool
    box_hit: float | None
    present: bool
    mask_iou: float | None
    colour: str | None
    shape: str | None
    pattern: str | None
    colour_ok: bool
    shape_ok: bool
    pattern_ok: bool


@dataclass(frozen=True)
class StoryScore:
    """All subject scores of a story, the scene read from each frame, and the story-level figures."""

    subjects: tuple[SubjectScore, ...]
    scenes: tuple[str, ...]
    scene_ok: tuple[bool, ...]
    box_hit: float | None
    box_success: float | None
    identity_consistency: float | None
    colour_accuracy: float
    shape_accuracy: float
    pattern_accuracy: float
    prompt_following: float

    def to_dict(self) -> dict:
        return asdict(self)


def box_hit(mask: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Share of ``mask``'s pixels inside ``box`` (normalised xyxy; a pixel counts as inside if the box overlaps it);
    0.0 for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise LayoutError("mask", f"expected an (H, W) mask, got shape {mask.shape}", mask.shape)
    total = int(mask.sum())
    if total == 0:
        return 0.0
    return float((mask & box_pixels(box, *mask.shape)).sum() / total)


def _find_blob(labels: PaletteLabels, box: tuple[float, float, float, float] | None,
               other_colours: Sequence[int]) -> np.ndarray | None:
    """The foreground blob of a character: most pixels inside its box; the largest when there is no box or no blob
    reaches into it (a character drawn in the wrong place still has an identity)."""
    candidates = labels.foreground & ~np.isin(labels.colour, list(other_colours))
    blobs, count = components(candidates)
    if count == 0:
        return None
    sizes = np.bincount(blobs.ravel(), minlength=count + 1)[1:]
    scores = sizes
    if box is not None:
        inside = np.bincount(blobs[box_pixels(box, *blobs.shape)].ravel(), minlength=count + 1)[1:]
        if inside.max() >= MIN_BLOB_PIXELS:
            scores = inside
    best = int(np.argmax(scores))
    if sizes[best] < MIN_BLOB_PIXELS:
        return None
    return ndimage.binary_fill_holes(blobs == best + 1)


def identify(image: Image.Image | np.ndarray | PaletteLabels, box: tuple[float, float, float, float] | None = None,
             other_colours: Sequence[str] = ()) -> Identification:
    """Colour, shape and pattern of the character blob overlapping ``box`` (the largest blob without one), ignoring
    pixels of ``other_colours`` (the other characters in the frame). ``image`` may be already labelled."""
    labels = image if isinstance(image, PaletteLabels) else label_palette(image)
    unknown = [c for c in other_colours if c not in _COLOUR_NAMES]
    if unknown:
        raise LayoutError("other_colours", f"unknown colour {unknown[0]!r}, expected one of {_COLOUR_NAMES}", unknown)
    blob = _find_blob(labels, box, [_COLOUR_NAMES.index(c) for c in other_colours])
    if blob is None:
        return Identification(None, None, None, 0)
    owners = labels.colour[blob]
    weights = np.where(labels.secondary[blob], 0.5, 1.0)
    votes = np.bincount(owners[owners >= 0], weights=weights[owners >= 0], minlength=len(COLOURS))
    colour = int(votes.argmax())
    # Narrow the blob to its dominant colour: a touching character of another colour must not change the shape.
    own, count = components(labels.colour == colour)
    overlap = np.bincount(own[blob].ravel(), minlength=count + 1)[1:]
    if count and overlap.max() >= MIN_BLOB_PIXELS:
        blob = ndimage.binary_fill_holes(own == int(overlap.argmax()) + 1)
    marks = labels.secondary & (labels.colour == colour)
    return Identification(_COLOUR_NAMES[colour], classify_shape(blob), classify_pattern(blob, marks),
                          int(blob.sum()))


def drawn_identities(image: Image.Image | np.ndarray | PaletteLabels) -> list[Identification]:
    """Every character-like blob of an image, wherever it is: for each colour, each connected blob of it (at least
    ``MIN_BLOB_PIXELS``, holes filled) with its shape and pattern, read as :func:`identify` reads one."""
    labels = image if isinstance(image, PaletteLabels) else label_palette(image)
    found = []
    for colour, name in enumerate(_COLOUR_NAMES):
        blobs, count = components(labels.colour == colour)
        sizes = np.bincount(blobs.ravel(), minlength=count + 1)[1:]
        marks = labels.secondary & (labels.colour == colour)
        for k in np.flatnonzero(sizes >= MIN_BLOB_PIXELS):
            blob = ndimage.binary_fill_holes(blobs == k + 1)
            found.append(Identification(name, classify_shape(blob), classify_pattern(blob, marks), int(blob.sum())))
    return found


def identity_anywhere(images: Sequence[Image.Image | np.ndarray], story: Story) -> list[bool]:
    """For each subject of each frame with two or more characters (frame order, then the frame's subjects): whether
    some blob drawn anywhere in the frame (:func:`drawn_identities`) has the character's colour, shape and pattern."""
    if len(images) != story.num_frames:
        raise LayoutError("images", f"got {len(images)} images for a story of {story.num_frames} frames", len(images))
    found = []
    for i, image in enumerate(images):
        subjects = story.resolve_frame(i)
        if len(subjects) < 2:
            continue
        pixels = np.rint(as_rgb_array(image, f"images[{i}]")).astype(np.uint8)
        drawn = {(d.colour, d.shape, d.pattern) for d in drawn_identities(pixels)}
        for subject in subjects:
            spec = character_look(story, subject.character)
            found.append((spec.colour, spec.shape, spec.pattern) in drawn)
    return found


def classify_scene(image: Image.Image | np.ndarray, labels: PaletteLabels | None = None) -> SceneSpec:
    """The ShapeStory scene whose (upper, lower) colours best match the median background colour of the image's
    top and bottom quarters (every place's horizon lies between them)."""
    pixels = as_rgb_array(image)
    labels = label_palette(pixels) if labels is None else labels
    h = pixels.shape[0]
    quarter = max(h // 4, 1)
    medians = []
    for rows in (slice(0, quarter), slice(h - quarter, h)):
        band, background = pixels[rows], ~labels.foreground[rows]
        chosen = band[background] if background.sum() >= 0.1 * background.size else band.reshape(-1, 3)
        medians.append(np.median(chosen, axis=0))
    top, bottom = medians
    scenes = all_scene_specs()
    cost = [np.linalg.norm(top - np.asarray(s.upper)) + np.linalg.norm(bottom - np.asarray(s.lower)) for s in scenes]
    return scenes[int(np.argmin(cost))]


def _expected_masks(story: Story, index: int, width: int, height: int) -> dict[str, np.ndarray] | None:
    """Ground-truth masks of a frame at the image's size, when every subject has a box."""
    frame = story.frames[index]
    if not frame.subjects or any(s.box is None for s in frame.subjects):
        return None
    return render_frame(story, index, width, height)[1]


def _consistency(ids: Sequence[tuple[str | None, str | None]]) -> float | None:
    pairs = list(itertools.combinations(ids, 2))
    if not pairs:
        return None
    return float(np.mean([a == b and a[0] is not None and a[1] is not None for a, b in pairs]))


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def score_story(images: Sequence[Image.Image | np.ndarray], story: Story, hit_threshold: float = 0.8) -> StoryScore:
    """Score the generated frames of a ShapeStory story (texts must use the ShapeStory vocabulary)."""
    if len(images) != story.num_frames:
        raise LayoutError("images", f"got {len(images)} images for a story of {story.num_frames} frames", len(images))
    if not 0.0 < hit_threshold <= 1.0:
        raise LayoutError("hit_threshold", f"must be in (0, 1], got {hit_threshold!r}", hit_threshold)
    subjects, scenes, scene_ok = [], [], []
    for i, image in enumerate(images):
        # One conversion to uint8 (a float array would read as 0..1 in the helpers below).
        pixels = np.rint(as_rgb_array(image, f"images[{i}]")).astype(np.uint8)
        h, w = pixels.shape[:2]
        labels = label_palette(pixels)
        scene = classify_scene(pixels, labels)
        scenes.append(scene.name)
        scene_ok.append(scene == frame_scene(story, i))
        expected = _expected_masks(story, i, w, h)
        resolved = story.resolve_frame(i)
        specs = {r.character: character_look(story, r.character) for r in resolved}
        for r in resolved:
            spec = specs[r.character]
            others = [s.colour for key, s in specs.items() if key != r.character]
            found = identify(labels, r.box if r.has_box else None, others)
            hit = iou = None
            present = found.pixels > 0
            if r.has_box:
                mask = character_mask(pixels, story, i, r.character)
                want = expected[r.character] if expected is not None else None
                need = PRESENT_SHARE * (want.sum() if want is not None else 1.0)
                present = bool(mask.sum() >= max(need, 1.0))
                hit = box_hit(mask, r.box) if present else 0.0
                if want is not None:
                    iou = float((mask & want).sum() / max((mask | want).sum(), 1))
            subjects.append(SubjectScore(
                frame=i, character=r.character, has_box=r.has_box, box_hit=hit, present=present, mask_iou=iou,
                colour=found.colour, shape=found.shape, pattern=found.pattern, colour_ok=found.colour == spec.colour,
                shape_ok=found.shape == spec.shape, pattern_ok=found.pattern == spec.pattern,
            ))
    hits = [s.box_hit for s in subjects if s.box_hit is not None]
    per_character = [
        _consistency([(s.colour, s.shape) for s in subjects if s.character == cid]) for cid in story.character_ids
    ]
    per_character = [c for c in per_character if c is not None]
    return StoryScore(
        subjects=tuple(subjects),
        scenes=tuple(scenes),
        scene_ok=tuple(scene_ok),
        box_hit=_mean(hits),
        box_success=_mean([float(h >= hit_threshold) for h in hits]),
        identity_consistency=_mean(per_character),
        colour_accuracy=float(np.mean([s.colour_ok for s in subjects])),
        shape_accuracy=float(np.mean([s.shape_ok for s in subjects])),
        pattern_accuracy=float(np.mean([s.pattern_ok for s in subjects])),
        prompt_following=float(np.mean(scene_ok)),
    )


def summarize(scores: Sequence[StoryScore], hit_threshold: float = 0.8) -> dict[str, float | int | None]:
    """Figures over many stories: box hit, box success, identity accuracies and prompt following averaged over all
    subjects / frames; identity consistency averaged over stories that have it."""
    subjects = [s for score in scores for s in score.subjects]
    hits = [s.box_hit for s in subjects if s.box_hit is not None]
    return {
        "stories": len(scores),
        "subjects": len(subjects),
        "box_hit": _mean(hits),
        "box_success": _mean([float(h >= hit_threshold) for h in hits]),
        "present": _mean([float(s.present) for s in subjects]),
        "mask_iou": _mean([s.mask_iou for s in subjects if s.mask_iou is not None]),
        "identity_consistency": _mean([s.identity_consistency for s in scores if s.identity_consistency is not None]),
        "colour_accuracy": _mean([float(s.colour_ok) for s in subjects]),
        "shape_accuracy": _mean([float(s.shape_ok) for s in subjects]),
        "pattern_accuracy": _mean([float(s.pattern_ok) for s in subjects]),
        "prompt_following": _mean([float(ok) for score in scores for ok in score.scene_ok]),
    }
