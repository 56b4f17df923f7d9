"""ShapeStory vocabulary: shapes, colours, patterns, scenes, and the text that names them.

Every caption the generator writes is built here, and every metric reads identities and scenes back from text with
the parsers here, so a story's JSON alone (no side file) says what each frame should show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..story.errors import LayoutError
from ..text import caption_words as _words

__all__ = [
    "COLOURS",
    "PATTERNS",
    "PLACES",
    "SHAPES",
    "TIMES",
    "CharacterSpec",
    "ColourSpec",
    "PlaceSpec",
    "SceneSpec",
    "all_character_specs",
    "all_scene_specs",
    "caption_words",
    "character_spec",
    "IDENTITY_FORMS",
    "PARTIAL_FORMS",
    "identity_text",
    "named_attributes",
    "parse_identity",
    "parse_scene",
    "position_words",
    "scene_prompt",
    "size_word",
    "subject_caption",
]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ColourSpec:
    """A character colour: ``primary`` fills the shape, ``secondary`` (a darker shade) draws its pattern."""

    name: str
    primary: RGB
    secondary: RGB


@dataclass(frozen=True)
class PlaceSpec:
    """A background: ``upper`` above the horizon, ``lower`` below it (``horizon`` None: one flat colour)."""

    name: str
    phrase: str
    upper: RGB
    lower: RGB
    horizon: float | None


# Shapes are drawn by draw.py; names here are the words used in captions.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross", "heart", "crescent")

# Saturated colours chosen to stay far (RGB distance) from every background colour below; tests check the margins.
COLOURS: tuple[ColourSpec, ...] = (
    ColourSpec("red", (220, 40, 40), (120, 15, 25)),
    ColourSpec("orange", (250, 140, 20), (150, 70, 0)),
    ColourSpec("yellow", (250, 225, 30), (160, 120, 0)),
    ColourSpec("green", (30, 175, 60), (10, 90, 30)),
    ColourSpec("cyan", (20, 210, 220), (0, 110, 130)),
    ColourSpec("blue", (40, 70, 230), (15, 25, 120)),
    ColourSpec("purple", (150, 50, 210), (75, 20, 110)),
    ColourSpec("pink", (255, 100, 190), (160, 30, 100)),
    ColourSpec("white", (250, 250, 250), (150, 150, 160)),
)

# Pattern names as stored; the caption adjective is PATTERN_WORDS[name] ("" for solid: "a red star").
PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checks")
PATTERN_WORDS: dict[str, str] = {"solid": "", "stripes": "striped", "dots": "dotted", "checks": "checked"}

PLACES: tuple[PlaceSpec, ...] = (
    PlaceSpec("sky", "in the sky", (140, 190, 235), (140, 190, 235), None),
    PlaceSpec("grass", "on the grass", (175, 215, 240), (125, 150, 70), 0.5),
    PlaceSpec("beach", "on the beach", (175, 215, 240), (225, 200, 150), 0.55),
    PlaceSpec("room", "in a room", (205, 185, 160), (135, 100, 75), 0.65),
    PlaceSpec("road", "on the road", (175, 215, 240), (95, 95, 100), 0.6),
)
# Times of day: the phrase added to the place phrase, and how the background is recoloured.
TIMES: tuple[str, ...] = ("day", "night")
TIME_PHRASES: dict[str, str] = {"day": "", "night": "at night"}
NIGHT_SKY: RGB = (20, 25, 70)
NIGHT_SHADE = 0.45  # ground and indoor colours at night are multiplied by this


@dataclass(frozen=True)
class CharacterSpec:
    """What a character looks like: one shape, one colour, one pattern."""

    shape: str
    colour: str
    pattern: str

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise LayoutError("character.shape", f"unknown shape {self.shape!r}, expected one of {SHAPES}", self.shape)
        if self.colour not in _COLOUR_BY_NAME:
            names = tuple(_COLOUR_BY_NAME)
            raise LayoutError(
                "character.colour", f"unknown colour {self.colour!r}, expected one of {names}", self.colour
            )
        if self.pattern not in PATTERNS:
            raise LayoutError(
                "character.pattern", f"unknown pattern {self.pattern!r}, expected one of {PATTERNS}", self.pattern
            )

    @property
    def colours(self) -> ColourSpec:
        return _COLOUR_BY_NAME[self.colour]


@dataclass(frozen=True)
class SceneSpec:
    """A frame's background: a place at a time of day, with its two resolved colours."""

    place: str
    time: str

    def __post_init__(self) -> None:
        if self.place not in _PLACE_BY_NAME:
            names = tuple(_PLACE_BY_NAME)
            raise LayoutError("scene.place", f"unknown place {self.place!r}, expected one of {names}", self.place)
        if self.time not in TIMES:
            raise LayoutError("scene.time", f"unknown time {self.time!r}, expected one of {TIMES}", self.time)

    @property
    def horizon(self) -> float | None:
        return _PLACE_BY_NAME[self.place].horizon

    @property
    def upper(self) -> RGB:
        place = _PLACE_BY_NAME[self.place]
        if self.time == "night":
            return _shade(place.upper) if place.name == "room" else NIGHT_SKY
        return place.upper

    @property
    def lower(self) -> RGB:
        place = _PLACE_BY_NAME[self.place]
        if self.time == "night":
            return NIGHT_SKY if place.horizon is None else _shade(place.lower)
        return place.lower

    @property
    def name(self) -> str:
        return f"{self.place}/{self.time}"


def _shade(rgb: RGB) -> RGB:
    return tuple(round(c * NIGHT_SHADE) for c in rgb)  # type: ignore[return-value]


_COLOUR_BY_NAME: dict[str, ColourSpec] = {c.name: c for c in COLOURS}
_PLACE_BY_NAME: dict[str, PlaceSpec] = {p.name: p for p in PLACES}


def character_spec(shape: str, colour: str, pattern: str) -> CharacterSpec:
    return CharacterSpec(shape, colour, pattern)


def all_character_specs() -> list[CharacterSpec]:
    """Every shape x colour x pattern combination, in a fixed order."""
    return [CharacterSpec(s, c.name, p) for s in SHAPES for c in COLOURS for p in PATTERNS]


def all_scene_specs() -> list[SceneSpec]:
    return [SceneSpec(p.name, t) for p in PLACES for t in TIMES]


# ---------------------------------------------------------------- text
# What an identity text names. "full": colour, pattern and shape ("a red striped star"); "no_colour": pattern and
# shape ("a striped star", "a star" for a solid one); "none": nothing ("a character"). The forms are unambiguous: a
# text names the colour iff it names all three, and a text without a colour word names the pattern by its word or,
# when there is none, as solid. Partial forms are the identity dropout of the consistency protocol: what the text
# leaves out must come from the reference or from the story's other frames.
IDENTITY_FORMS: dict[str, tuple[str, ...]] = {
    "full": ("colour", "pattern", "shape"),
    "no_colour": ("pattern", "shape"),
    "none": (),
}
PARTIAL_FORMS: tuple[str, ...] = ("no_colour", "none")
UNNAMED_CHARACTER = "character"


def _check_form(form: str) -> tuple[str, ...]:
    if form not in IDENTITY_FORMS:
        raise LayoutError("identity_form", f"unknown form {form!r}, expected one of {tuple(IDENTITY_FORMS)}", form)
    return IDENTITY_FORMS[form]


def _attribute_words(spec: CharacterSpec, form: str = "full") -> str:
    named = _check_form(form)
    if not named:
        return UNNAMED_CHARACTER
    words = [spec.colour if "colour" in named else "", PATTERN_WORDS[spec.pattern], spec.shape]
    return " ".join(w for w in words if w)


def identity_text(spec: CharacterSpec, form: str = "full") -> str:
    """``"a red striped star"``; ``"an orange circle"`` for a solid one; ``form`` (see ``IDENTITY_FORMS``) leaves
    attributes out: ``"a striped star"`` (no colour), ``"a character"`` (nothing)."""
    words = _attribute_words(spec, form)
    article = "an" if words[0] in "aeiou" else "a"
    return f"{article} {words}"


def scene_prompt(scene: SceneSpec) -> str:
    """``"on the grass at night"``; ``"in the sky"`` by day."""
    place = _PLACE_BY_NAME[scene.place].phrase
    time = TIME_PHRASES[scene.time]
    return f"{place} {time}".strip()


def size_word(side: float) -> str:
    """Name a box's side length (normalised to the frame's shorter side)."""
    if side < 0.35:
        return "small"
    if side < 0.5:
        return "medium"
    return "large"


def position_words(cx: float, cy: float) -> str:
    """Name where a box centre lies in the frame's 3x3 grid: ``"at the top left"``, ``"in the middle"``."""
    vertical = "top" if cy < 1 / 3 else ("bottom" if cy > 2 / 3 else "")
    horizontal = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "")
    if vertical and horizontal:
        return f"at the {vertical} {horizontal}"
    if vertical:
        return f"at the {vertical}"
    if horizontal:
        return f"on the {horizontal}"
    return "in the middle"


def subject_caption(spec: CharacterSpec, box: tuple[float, float, float, float], form: str = "full") -> str:
    """``"the red striped star, small, at the top left"`` for a box in normalised xyxy (``form``: as
    :func:`identity_text`)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return f"the {_attribute_words(spec, form)}, {size_word(side)}, {position_words(cx, cy)}"


_PATTERN_BY_WORD = {w: p for p, w in PATTERN_WORDS.items() if w}
_IDENTITY_RE = re.compile(
    r"\b(?P<colour>{c})\s+(?:(?P<pattern>{p})\s+)?(?P<shape>{s})\b".format(
        c="|".join(c.name for c in COLOURS), p="|".join(_PATTERN_BY_WORD), s="|".join(SHAPES)
    )
)


def parse_identity(text: str) -> CharacterSpec:
    """Read a character back from an identity text or subject caption ("a red striped star", "the blue heart, ...")."""
    match = _IDENTITY_RE.search(text.lower())
    if match is None:
        raise LayoutError(
            "identity", f"no ShapeStory character ('<colour> [pattern] <shape>') found in {text!r}", text
        )
    pattern = _PATTERN_BY_WORD[match["pattern"]] if match["pattern"] else "solid"
    return CharacterSpec(match["shape"], match["colour"], pattern)


_PARTIAL_RE = re.compile(r"\b(?:(?P<pattern>{p})\s+)?(?P<shape>{s})\b".format(p="|".join(_PATTERN_BY_WORD),
                                                                          s="|".join(SHAPES)))


def named_attributes(text: str) -> dict[str, str]:
    """The attributes an identity text (or subject caption) names, as ``{"colour"|"pattern"|"shape": value}``: all
    three for a full identity, pattern and shape for the ``no_colour`` form, none for ``"a character"``."""
    low = text.lower()
    if _IDENTITY_RE.search(low):
        spec = parse_identity(low)
        return {"colour": spec.colour, "pattern": spec.pattern, "shape": spec.shape}
    match = _PARTIAL_RE.search(low)
    if match is not None:
        return {"pattern": _PATTERN_BY_WORD[match["pattern"]] if match["pattern"] else "solid",
                "shape": match["shape"]}
    if re.search(rf"\b{UNNAMED_CHARACTER}\b", low):
        return {}
    raise LayoutError("identity", f"no ShapeStory identity found in {text!r}", text)


def parse_scene(prompt: str) -> SceneSpec:
    """Read a scene back from a frame prompt ("on the grass at night"); day unless "at night" is said."""
    low = prompt.lower()
    places = [p.name for p in PLACES if p.phrase in low]
    if len(places) != 1:
        raise LayoutError(
            "prompt", f"expected exactly one ShapeStory place phrase in {prompt!r}, found {places or 'none'}", prompt
        )
    time = "night" if TIME_PHRASES["night"] in low else "day"
    return SceneSpec(places[0], time)


def caption_words() -> tuple[str, ...]:
    """Every word a ShapeStory caption can use (identity texts in every form, frame prompts, subject captions of
    every size and position), sorted: the vocabulary the demo model was trained on (its ``lay2story.json``)."""
    texts = [identity_text(spec, form) for spec in all_character_specs() for form in IDENTITY_FORMS]
    texts += [scene_prompt(scene) for scene in all_scene_specs()]
    spec = all_character_specs()[0]
    for side in (0.2, 0.4, 0.6):
        for cx in (1 / 6, 1 / 2, 5 / 6):
            for cy in (1 / 6, 1 / 2, 5 / 6):
                box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
                texts += [subject_caption(spec, box, form) for form in IDENTITY_FORMS]
    return tuple(sorted({word for text in texts for word in _words(text)}))
