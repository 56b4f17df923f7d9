"""Lettering fonts: one scalable font that ships with a dependency, a user font file, and glyph checks.

The built-in font is **Aileron Regular** by Sora Sagano (dotcolon.net), released under **CC0 1.0** (public domain
dedication). Pillow (>= 10.1, built with FreeType, as its wheels are) embeds a subset of it and returns it, at any
size, from ``PIL.ImageFont.load_default(size=...)``; it is never read from the system, so every user has it. The
subset covers printable ASCII and a little punctuation (curly quotes, the ellipsis) only: accented Latin, Greek,
Cyrillic and CJK text needs a font file with those glyphs, given as ``font`` (a .ttf/.otf/.ttc path, e.g. DejaVu
Sans or Noto Sans CJK). Text the font cannot draw is refused before any drawing, with one line naming the
characters and the font to give (:meth:`ComicFont.check`); it never silently renders as empty boxes.
"""

from __future__ import annotations

import logging
import unicodedata

from PIL import Image, ImageDraw, ImageFont

__all__ = ["BUILTIN_FONT", "ComicFont", "load_font", "text_width", "wrap_caption"]

logger = logging.getLogger(__name__)

BUILTIN_FONT = "Aileron Regular (Pillow's built-in font, CC0 1.0)"
_PROBE_SIZE = 24
_NOT_A_GLYPH = "\U0010fffd"  # a private-use code point: no font maps it, so it draws the font's .notdef glyph
_CJK_RANGES = ((0x1100, 0x11FF), (0x2E80, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
               (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The built-in font (Aileron Regular, CC0 1.0) at ``size`` pixels (Pillow >= 10.1 with FreeType), else Pillow's
    fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError, ImportError):
        return ImageFont.load_default()


def text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def wrap_caption(text: str | None, font, max_width: int, max_lines: int) -> list[str]:
    """Word-wraps ``text`` to lines of at most ``max_width`` pixels (overlong words are cut by characters); past
    ``max_lines`` the last line ends with an ellipsis."""
    if not text or not text.strip() or max_lines <= 0:
        return []
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    fits = lambda s: text_width(draw, s, font) <= max_width  # noqa: E731
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
        while not fits(word) and len(word) > 1:  # a word wider than the panel: break it
            cut = max(1, max(k for k in range(1, len(word) + 1) if fits(word[:k]) or k == 1))
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(last + "\u2026"):
            last = last[:-1].rstrip()
        lines = lines[: max_lines - 1] + [last + "\u2026"]
    return lines


def _is_cjk(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in _CJK_RANGES)


def _drawn(char: str) -> bool:
    """Whether ``char`` needs a visible glyph (not a space, a control or a format character)."""
    return not char.isspace() and unicodedata.category(char)[0] not in ("C", "Z")


class ComicFont:
    """The lettering font at any size: the built-in Aileron (``path=None``) or a .ttf/.otf/.ttc file.

    Sizes and glyph checks are cached on the instance (one per page composition).
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.name = BUILTIN_FONT if path is None else repr(path)
        self._sizes: dict[int, ImageFont.ImageFont | ImageFont.FreeTypeFont] = {}
        self._has: dict[str, bool] = {}
        self._notdef: tuple | None = None
        self.scalable = True
        if path is not None:
            try:
                ImageFont.truetype(path, _PROBE_SIZE)
            except OSError as err:
                raise ValueError(f"font: cannot read {path!r} as a TrueType/OpenType font ({err})") from None
        elif not isinstance(load_font(_PROBE_SIZE), ImageFont.FreeTypeFont):
            self.scalable = False
            logger.warning("Pillow has no FreeType (or is older than 10.1): lettering uses its small bitmap font")

    def at(self, size: int):
        """The font at ``size`` pixels."""
        font = self._sizes.get(size)
        if font is None:
            font = load_font(size) if self.path is None else ImageFont.truetype(self.path, size)
            self._sizes[size] = font
        return font

    def _mask(self, char: str) -> tuple:
        mask = self.at(_PROBE_SIZE).getmask(char)
        return mask.size, bytes(mask)

    def has_glyph(self, char: str) -> bool:
        """Whether the font draws ``char`` with a glyph of its own (not its .notdef box, not nothing)."""
        if not _drawn(char) or not self.scalable:
            return True
        known = self._has.get(char)
        if known is None:
            if self._notdef is None:
                self._notdef = self._mask(_NOT_A_GLYPH)
            size, pixels = self._mask(char)
            known = (size, pixels) != self._notdef and any(pixels)
            self._has[char] = known
        return known

    def missing(self, text: str) -> list[str]:
        """The distinct characters of ``text`` the font has no glyph for, in order of appearance."""
        out: list[str] = []
        for char in text:
            if char not in out and not self.has_glyph(char):
                out.append(char)
        return out

    def check(self, texts: dict[str, str], option: str = "font") -> None:
        """Raises one ValueError line for the first text (``{field: text}``) with characters the font lacks; the
        line says to give a font with ``option``."""
        for field, text in texts.items():
            missing = self.missing(text)
            if not missing:
                continue
            shown = "".join(missing[:12]) + ("..." if len(missing) > 12 else "")
            hint = ("Noto Sans CJK (Chinese, Japanese, Korean)" if any(map(_is_cjk, missing))
                    else "DejaVu Sans or Noto Sans")
            which = "the built-in font (Aileron, ASCII only)" if self.path is None else f"the font {self.path!r}"
            raise ValueError(f"{field}: {which} has no glyphs for {shown!r}; give a font file that has them "
                             f"with {option} (a .ttf/.otf path, e.g. {hint})")
