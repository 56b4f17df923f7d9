"""The page look (:class:`ComicStyle`), colours and the reading direction, validated with errors naming the field."""

from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import ImageColor

__all__ = ["FONT_SUFFIXES", "READINGS", "RGB", "ComicStyle", "check_reading", "int_in", "parse_colour"]

RGB = tuple[int, int, int]
READINGS = ("auto", "ltr", "rtl")  # auto: the template's own (right-to-left for manga, else left-to-right)
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


def parse_colour(value: object, field: str) -> RGB:
    """An RGB colour from ``"#rrggbb"``, a CSS name (``"white"``), ``"r,g,b"`` or a 3-sequence of 0..255."""
    if isinstance(value, str) and value.count(",") == 2:
        value = [part.strip() for part in value.split(",")]
    if isinstance(value, (list, tuple)):
        try:
            rgb = tuple(int(v) for v in value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{field}: expected three integers 0..255, got {value!r}") from err
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"{field}: expected three integers 0..255, got {value!r}")
        return rgb  # type: ignore[return-value]
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected a colour like '#ffffff', 'white' or '255,255,255', got {value!r}")
    try:
        return ImageColor.getrgb(value.strip())[:3]  # type: ignore[return-value]
    except ValueError as err:
        raise ValueError(f"{field}: unknown colour {value!r} (use '#rrggbb', a name or 'r,g,b')") from err


def int_in(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{field}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_reading(value: object, field: str = "reading") -> str:
    if value not in READINGS:
        raise ValueError(f"{field}: expected one of {READINGS}, got {value!r}")
    return value  # type: ignore[return-value]


def _font_path(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"font: expected a .ttf/.otf/.ttc file path or None, got {type(value).__name__}")
    path = os.fspath(value)
    if not path.lower().endswith(FONT_SUFFIXES):
        raise ValueError(f"font: expected a .ttf, .otf or .ttc file, got {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"font: file {path!r} does not exist")
    return path


@dataclass(frozen=True)
class ComicStyle:
    """Page look. ``panel_width`` 0 keeps the frames' own width; captions wrap to at most ``max_caption_lines``.

    Lettering: ``font`` is a .ttf/.otf/.ttc path (``None``: the built-in font, see :mod:`.fonts`); bubble text starts
    at ``bubble_font_size`` pixels (0: ``font_size``) and shrinks to fit down to ``min_font_size``. Bubbles are filled
    with ``bubble_colour``, caption boxes with ``caption_box_colour``, outlined ``bubble_line`` pixels wide in
    ``border_colour``.
    """

    font_size: int = 20
    margin: int = 24
    gutter: int = 12
    border: int = 2
    max_caption_lines: int = 3
    panel_width: int = 0
    background: RGB = (255, 255, 255)
    text_colour: RGB = (0, 0, 0)
    border_colour: RGB = (0, 0, 0)
    font: str | None = None
    bubble_font_size: int = 0
    min_font_size: int = 8
    bubble_colour: RGB = (255, 255, 255)
    caption_box_colour: RGB = (255, 244, 200)
    bubble_line: int = 2

    def __post_init__(self) -> None:
        int_in(self.font_size, "font_size", 4, 256)
        int_in(self.margin, "margin", 0, 1024)
        int_in(self.gutter, "gutter", 0, 1024)
        int_in(self.border, "border", 0, 64)
        int_in(self.max_caption_lines, "max_caption_lines", 0, 32)
        int_in(self.panel_width, "panel_width", 0, 8192)
        int_in(self.bubble_font_size, "bubble_font_size", 0, 256)
        int_in(self.min_font_size, "min_font_size", 4, 256)
        int_in(self.bubble_line, "bubble_line", 0, 16)
        if self.bubble_font_size and self.min_font_size > self.bubble_font_size:
            raise ValueError(f"min_font_size: {self.min_font_size} is above bubble_font_size "
                             f"{self.bubble_font_size}")
        for name in ("background", "text_colour", "border_colour", "bubble_colour", "caption_box_colour"):
            object.__setattr__(self, name, parse_colour(getattr(self, name), name))
        object.__setattr__(self, "font", _font_path(self.font))

    @property
    def start_font_size(self) -> int:
        """The size bubble text starts at (before shrinking to fit)."""
        return max(self.bubble_font_size or self.font_size, self.min_font_size)
