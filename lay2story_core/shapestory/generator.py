"""ShapeStory: a deterministic synthetic story set with known boxes and identities.

A character is a shape with a colour and a pattern ("a red striped star"); a frame puts it in a square box of varying
position and size over a simple background ("on the grass at night"), optionally with a second character. Stories are
written in the project's schema, and everything needed to draw them is in their text and boxes, so
:func:`render_story` re-draws any ShapeStory story (ground truth for the metrics) from its JSON alone.

Characters are split by attribute combination: the test split holds out about 1/7 of the shape x colour x pattern
combinations, while every single attribute and every pair of attributes still occurs in training.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from ..story import Character, Frame, Reference, Story, Subject
from ..story.errors import LayoutError
from .draw import Placement, draw_frame
from .vocab import (
    COLOURS,
    PARTIAL_FORMS,
    PATTERNS,
    SHAPES,
    CharacterSpec,
    SceneSpec,
    all_character_specs,
    all_scene_specs,
    identity_text,
    parse_identity,
    parse_scene,
    scene_prompt,
    subject_caption,
)

__all__ = [
    "SPLITS",
    "ShapeStoryConfig",
    "character_look",
    "character_split",
    "characters_for_split",
    "frame_scene",
    "generate_story",
    "partial_identity_story",
    "reference_scene",
    "render_frame",
    "render_reference",
    "render_story",
    "story_seed",
    "write_dataset",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ShapeStoryConfig:
    """How stories are drawn.

    ``size``: frame width and height in pixels (multiple of 8). Box sides are fractions of the frame side, drawn from
    ``[min_box, max_box]``. A story has ``frame_counts[k]`` frames with probability ``frame_count_weights[k]`` (the
    paper's 4/5/6 at 50/30/20 %). With probability ``second_character_prob`` a second character (another colour)
    joins in some frames, with a box disjoint from the first; with ``third_character_prob`` (given a second) a third
    of a third colour joins some of those frames. ``scene_change_prob``: chance that a frame moves to a new
    scene rather than keeping the previous frame's. The reference is drawn with a side in ``reference_box``.
    """

    size: int = 64
    min_box: float = 0.4
    max_box: float = 0.65
    frame_counts: tuple[int, ...] = (4, 5, 6)
    frame_count_weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    second_character_prob: float = 0.25
    scene_change_prob: float = 0.6
    reference_box: tuple[float, float] = (0.5, 0.8)
    identity_dropout: float = 0.0
    third_character_prob: float = 0.0

    def __post_init__(self) -> None:
        def bad(name: str, detail: str) -> LayoutError:
            return LayoutError(f"ShapeStoryConfig.{name}", detail, getattr(self, name))

        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 16 or self.size % 8:
            raise bad("size", f"must be an int >= 16 and a multiple of 8, got {self.size!r}")
        if not 0.05 <= self.min_box <= self.max_box <= 1.0:
            raise bad("min_box", f"need 0.05 <= min_box <= max_box <= 1, got {self.min_box!r}, {self.max_box!r}")
        if not self.frame_counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                        for n in self.frame_counts):
            raise bad("frame_counts", f"must be a non-empty tuple of ints >= 1, got {self.frame_counts!r}")
        weights = self.frame_count_weights
        if len(weights) != len(self.frame_counts) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise bad("frame_count_weights", f"need {len(self.frame_counts)} non-negative weights with a positive "
                      f"sum, got {weights!r}")
        for name in ("second_character_prob", "third_character_prob", "scene_change_prob", "identity_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, f"must be a probability in [0, 1], got {getattr(self, name)!r}")
        lo, hi = self.reference_box
        if not 0.05 <= lo <= hi <= 1.0:
            raise bad("reference_box", f"need 0.05 <= lo <= hi <= 1, got {self.reference_box!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- splits and seeds
def character_split(spec: CharacterSpec) -> str:
    """``"test"`` for the held-out attribute combinations, else ``"train"``.

    Held out: ``(shape + 2 colour + 3 pattern) % 7 == 0`` over the vocabulary indices. For a fixed pair of
    attributes the third's values map to distinct residues, so at most a few combos per pair are held out and
    every pair is seen in training.
    """
    s, c, p = SHAPES.index(spec.shape), [x.name for x in COLOURS].index(spec.colour), PATTERNS.index(spec.pattern)
    return "test" if (s + 2 * c + 3 * p) % 7 == 0 else "train"


def characters_for_split(split: str) -> list[CharacterSpec]:
    _check_split(split)
    return [spec for spec in all_character_specs() if character_split(spec) == split]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise LayoutError("split", f"must be one of {SPLITS}, got {split!r}", split)


def story_seed(seed: int, index: int) -> int:
    """The seed of story ``index`` of a data set written with ``seed`` (independent streams, no collisions by
    construction of numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


# ---------------------------------------------------------------- story generation
def _square_box(rng: np.random.Generator, side: float, width: int, height: int) -> Box:
    """A box square in pixels with ``side`` a fraction of the shorter frame side, at a uniform position."""
    short = min(width, height)
    w, h = side * short / width, side * short / height
    x0, y0 = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
    return _round_box((x0, y0, x0 + w, y0 + h))


def _round_box(box: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (min(max(round(float(v), 4), 0.0), 1.0) for v in box)
    return (x0, y0, x1, y1)


def _disjoint(a: Box, b: Box) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _disjoint_boxes(rng: np.random.Generator, cfg: ShapeStoryConfig, count: int) -> tuple[Box, ...]:
    """``count`` (2 or 3) pairwise disjoint boxes; sides at most 0.5 (two) or 0.45 (three) so they always fit."""
    hi = min(cfg.max_box, 0.5 if count == 2 else 0.45)
    lo = min(cfg.min_box, hi)
    for _ in range(200):
        boxes = [_square_box(rng, rng.uniform(lo, hi), cfg.size, cfg.size) for _ in range(count)]
        if all(_disjoint(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]):
            return tuple(boxes)
    side = rng.uniform(lo, hi)  # fall back to the left and right halves (and the bottom middle for a third)
    top = rng.uniform(0.0, 0.5 - side) if count == 3 else rng.uniform(0.0, 1.0 - side)
    boxes = [(0.0, top, side, top + side), (1.0 - side, top, 1.0, top + side)]
    if count == 3:
        left = rng.uniform(0.0, 1.0 - side)
        boxes.append((left, 1.0 - side, left + side, 1.0))
    return tuple(_round_box(b) for b in boxes)


def generate_story(seed: int, config: ShapeStoryConfig | None = None, split: str = "train") -> Story:
    """One story, a pure function of ``(seed, config, split)``. Characters come from ``split``'s pool; references
    carry a box (``image=None``: :func:`write_dataset` fills in the file)."""
    _check_split(split)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LayoutError("seed", f"must be a non-negative int, got {seed!r}", seed)
    cfg = config or ShapeStoryConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), 0x5A17]))
    pool = characters_for_split(split)
    weights = np.asarray(cfg.frame_count_weights, dtype=np.float64)
    n_frames = int(rng.choice(cfg.frame_counts, p=weights / weights.sum()))

    main = pool[rng.integers(len(pool))]
    specs = [main]
    with_second: set[int] = set()
    if n_frames >= 2 and rng.random() < cfg.second_character_prob:
        others = [s for s in pool if s.colour != main.colour]
        specs.append(others[rng.integers(len(others))])
        count = int(rng.integers(2, n_frames + 1))
        with_second = set(rng.choice(n_frames, size=count, replace=False).tolist())
    with_third: set[int] = set()
    if with_second and cfg.third_character_prob > 0 and rng.random() < cfg.third_character_prob:
        others = [s for s in pool if s.colour not in (main.colour, specs[1].colour)]
        specs.append(others[rng.integers(len(others))])
        frames_with_second = sorted(with_second)
        count = int(rng.integers(min(2, len(frames_with_second)), len(frames_with_second) + 1))
        with_third = set(rng.choice(frames_with_second, size=count, replace=False).tolist())

    scenes = all_scene_specs()
    scene = scenes[rng.integers(len(scenes))]
    frames = []
    for i in range(n_frames):
        if i > 0 and rng.random() < cfg.scene_change_prob:
            scene = scenes[rng.integers(len(scenes))]
        if i in with_second:
            count = 3 if i in with_third else 2
            keyed = list(zip(("c0", "c1", "c2"), specs[:count], _disjoint_boxes(rng, cfg, count)))
        else:
            keyed = [("c0", main, _square_box(rng, rng.uniform(cfg.min_box, cfg.max_box), cfg.size, cfg.size))]
        subjects = tuple(Subject(key, box, subject_caption(spec, box)) for key, spec, box in keyed)
        frames.append(Frame(prompt=scene_prompt(scene), subjects=subjects))

    characters = tuple(
        Character(
            id=f"c{k}",
            identity=identity_text(spec),
            reference=Reference(None, _square_box(rng, rng.uniform(*cfg.reference_box), cfg.size, cfg.size)),
        )
        for k, spec in enumerate(specs)
    )
    return Story(characters=characters, frames=tuple(frames), width=cfg.size, height=cfg.size)


def partial_identity_story(story: Story, forms: dict[str, str]) -> Story:
    """``story`` with the identity text and subject captions of the characters in ``forms`` written in that form
    (``{"c0": "no_colour"}``; see :data:`~.vocab.IDENTITY_FORMS`). Boxes, scenes and references are unchanged; the
    result is no longer drawable from its text alone (the full ``story`` is the ground truth)."""
    looks = {cid: character_look(story, cid) for cid in forms}
    characters = tuple(
        replace(c, identity=identity_text(looks[c.id], forms[c.id])) if c.id in forms else c for c in story.characters
    )
    frames = tuple(
        replace(frame, subjects=tuple(
            replace(sub, caption=subject_caption(looks[sub.character], sub.box, forms[sub.character]))
            if sub.character in forms and sub.box is not None else sub
            for sub in frame.subjects))
        for frame in story.frames
    )
    return replace(story, characters=characters, frames=frames)


def _identity_forms(story: Story, seed: int, probability: float) -> dict[str, str]:
    """Which characters of a written story lose attributes (a pure function of the story's seed)."""
    if probability <= 0:
        return {}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D0]))
    forms = {}
    for character in story.characters:
        if rng.random() < probability:
            forms[character.id] = PARTIAL_FORMS[int(rng.integers(len(PARTIAL_FORMS)))]
    return forms


# ---------------------------------------------------------------- reading stories back
def character_look(story: Story, character_id: str) -> CharacterSpec:
    """The shape, colour and pattern a ShapeStory character's identity text names."""
    try:
        return parse_identity(story.character(character_id).identity)
    except LayoutError as err:
        if err.path != "identity":
            raise
        where = f"characters[{story.character_index(character_id)}].identity"
        raise LayoutError(where, err.detail, err.value) from None


def frame_scene(story: Story, index: int) -> SceneSpec:
    """The scene a ShapeStory frame prompt names."""
    try:
        return parse_scene(story.frames[index].prompt)
    except LayoutError as err:
        raise LayoutError(f"frames[{index}].prompt", err.detail, err.value) from None


# ---------------------------------------------------------------- rendering
def _size(story: Story, width: int | None, height: int | None) -> tuple[int, int]:
    w = story.width if width is None else width
    h = story.height if height is None else height
    for name, value in (("width", w), ("height", h)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 8:
            raise LayoutError(name, f"must be an int >= 8, got {value!r}", value)
    return w, h


def render_frame(story: Story, index: int, width: int | None = None,
                 height: int | None = None) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """Frame ``index`` of a ShapeStory story: the RGB image and, per character id, its pixel mask."""
    w, h = _size(story, width, height)
    frame = story.frames[index]
    if not frame.subjects:
        raise LayoutError(f"frames[{index}].subjects", "ShapeStory frames need at least one subject with a box", [])
    placements = []
    for k, subject in enumerate(frame.subjects):
        if subject.box is None:
            raise LayoutError(f"frames[{index}].subjects[{k}].box", "ShapeStory subjects need a box to be drawn", None)
        placements.append(Placement(subject.character, character_look(story, subject.character), subject.box))
    return draw_frame(frame_scene(story, index), placements, w, h)


def render_story(story: Story, width: int | None = None,
                 height: int | None = None) -> tuple[list[Image.Image], list[dict[str, np.ndarray]]]:
    """Every frame of a ShapeStory story (default: at the story's size): images and per-frame
    ``{character_id: (H, W) bool mask}``. Raises :class:`LayoutError` for frames that are not ShapeStory frames."""
    images, masks = [], []
    for i in range(story.num_frames):
        image, mask = render_frame(story, i, width, height)
        images.append(image)
        masks.append(mask)
    return images, masks


def reference_scene(character: Character) -> SceneSpec:
    """The background a character's reference is drawn on: a fixed function of its identity and reference box."""
    box = None if character.reference is None else character.reference.box
    key = f"{character.identity}|{box}".encode()
    scenes = all_scene_specs()
    return scenes[zlib.crc32(key) % len(scenes)]


def render_reference(story: Story, character_id: str, width: int | None = None,
                     height: int | None = None) -> tuple[Image.Image, np.ndarray]:
    """The character's reference picture (drawn in its ``reference.box``) and its mask."""
    character = story.character(character_id)
    if character.reference is None or character.reference.box is None:
        raise LayoutError(f"characters[{story.character_index(character_id)}].reference.box",
                          "ShapeStory references need a box to be drawn", None)
    w, h = _size(story, width, height)
    spec = character_look(story, character_id)
    image, masks = draw_frame(reference_scene(character), [Placement(character_id, spec, character.reference.box)],
                              w, h)
    return image, masks[character_id]


# ---------------------------------------------------------------- writing a data set
def _save_png(image: Image.Image, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_dataset(out_dir: str | os.PathLike, n_stories: int, split: str = "train", seed: int = 0,
                  config: ShapeStoryConfig | None = None, shard_size: int = 500) -> list[str]:
    """Write ``n_stories`` stories as JSONL shards ``<split>-00000.jsonl`` (one Story dict a line) with their PNGs in
    ``<split>-00000/`` beside them; image paths in the JSON are relative to the shard file. Story ``i`` is
    ``generate_story(story_seed(seed, i), config, split)``. Each file is written atomically and an existing shard is
    kept, so an interrupted run resumes. Returns the shard paths."""
    _check_split(split)
    for name, value, low in (("n_stories", n_stories, 0), ("shard_size", shard_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise LayoutError(name, f"must be an int >= {low}, got {value!r}", value)
    cfg = config or ShapeStoryConfig()
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    shards = []
    for first in range(0, n_stories, shard_size):
        name = f"{split}-{first // shard_size:05d}"
        shard_path = os.path.join(out, f"{name}.jsonl")
        shards.append(shard_path)
        if os.path.exists(shard_path):
            logger.info("keeping existing shard %s", shard_path)
            continue
        lines = []
        for i in range(first, min(first + shard_size, n_stories)):
            story = generate_story(story_seed(seed, i), cfg, split)
            rel_dir = f"{name}/s{i:06d}"
            os.makedirs(os.path.join(out, rel_dir), exist_ok=True)
            images, _ = render_story(story)
            refs = {c.id: render_reference(story, c.id)[0] for c in story.characters}
            forms = _identity_forms(story, story_seed(seed, i), cfg.identity_dropout)
            data = partial_identity_story(story, forms).to_dict() if forms else story.to_dict()
            for j, image in enumerate(images):
                data["frames"][j]["image"] = f"{rel_dir}/f{j}.png"
                _save_png(image, os.path.join(out, rel_dir, f"f{j}.png"))
            for k, character in enumerate(story.characters):
                ref_image = refs[character.id]
                data["characters"][k]["reference"]["image"] = f"{rel_dir}/ref-{character.id}.png"
                _save_png(ref_image, os.path.join(out, rel_dir, f"ref-{character.id}.png"))
            lines.append(json.dumps(data, separators=(",", ":")))
        _write_text(shard_path, "\n".join(lines) + "\n")
        logger.info("wrote %s (%d stories)", shard_path, len(lines))
    meta = {"split": split, "seed": seed, "n_stories": n_stories, "shard_size": shard_size, "config": cfg.to_dict()}
    _write_text(os.path.join(out, f"{split}-meta.json"), json.dumps(meta, indent=2) + "\n")
    return shards
