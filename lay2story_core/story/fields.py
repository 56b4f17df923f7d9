"""Schema constants and the field validators shared by stories and layouts.

Every validator takes the raw value and its field path and returns the canonical value or raises
:class:`LayoutError` naming the path and the bad value.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

from .errors import LayoutError

logger = logging.getLogger(__name__)

SCHEMA_VERSION: int = 2
SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2)
DIALOGUE_VERSION: int = 2  # the first schema version with per-frame dialogue lines
DEFAULT_MAX_FRAMES = 256
DEFAULT_MAX_CAPTION_CHARS = 1000
BOX_EPSILON = 1e-3
MAX_ID_CHARS = 128
MAX_PATH_CHARS = 4096
MAX_SIZE = 8192
SIZE_MULTIPLE = 8

Box = tuple[float, float, float, float]
FULL_FRAME: Box = (0.0, 0.0, 1.0, 1.0)

_COORDS = ("x0", "y0", "x1", "y1")
_SHOW_CHARS = 60


def show(value: object) -> str:
    """A short description of a value for error messages: its type and a truncated repr."""
    text = repr(value)
    if len(text) > _SHOW_CHARS:
        text = text[: _SHOW_CHARS - 3] + "..."
    return f"{type(value).__name__} {text}"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def check_limits(max_frames: object, max_caption_chars: object) -> tuple[int, int]:
    """Validates the parse limits themselves (they come from callers, e.g. a node's widget)."""
    return (
        parse_int(max_frames, "max_frames", minimum=1),
        parse_int(max_caption_chars, "max_caption_chars", minimum=1),
    )


def require_mapping(data: object, path: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise LayoutError(path, f"expected a JSON object, got {show(data)}", data)
    return data


def check_keys(
    data: Mapping, path: str, required: Iterable[str], optional: Iterable[str] = (), *, root: str = "story"
) -> None:
    """Unknown keys are errors (a typo must not pass silently); so are missing required keys."""
    required = tuple(required)
    allowed = set(required) | set(optional)
    unknown = [key for key in data if key not in allowed]
    if unknown:
        names = sorted(repr(key) for key in unknown)
        hints = []
        for key in unknown:
            if isinstance(key, str):
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                if close:
                    hints.append(f"{key!r} -> {close[0]!r}?")
        hint = f"; did you mean {', '.join(hints)}" if hints else ""
        raise LayoutError(
            path or root,
            f"unknown key(s) {', '.join(names)} (allowed: {', '.join(sorted(allowed))}){hint}",
            unknown[0] if len(unknown) == 1 else unknown,
        )
    for key in required:
        if key not in data:
            raise LayoutError(join(path, key), "missing required field")


def require_list(value: object, path: str, what: str = "a list") -> Sequence:
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Sequence):
        raise LayoutError(path, f"expected {what}, got {show(value)}", value)
    return value


def parse_text(value: object, path: str, *, max_chars: int | None = None, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise LayoutError(path, f"expected a string, got {show(value)}", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate, e.g. from a "\ud800" JSON escape: it could not be saved
        raise LayoutError(path, f"not valid Unicode text ({err.reason} at index {err.start})", value) from err
    if not allow_empty and not value.strip():
        raise LayoutError(path, f"must not be empty, got {value!r}", value)
    if max_chars is not None and len(value) > max_chars:
        raise LayoutError(path, f"is {len(value)} characters, over the limit of {max_chars}", value)
    return value


def parse_caption(value: object, path: str, *, max_chars: int | None = None) -> str | None:
    """An optional caption: ``None`` and whitespace-only strings both mean "no caption"."""
    if value is None:
        return None
    text = parse_text(value, path, max_chars=max_chars, allow_empty=True)
    return text if text.strip() else None


def parse_id(value: object, path: str) -> str:
    text = parse_text(value, path, max_chars=MAX_ID_CHARS)
    if text != text.strip():
        raise LayoutError(path, f"must not start or end with whitespace, got {text!r}", value)
    return text


def parse_file_path(value: object, path: str) -> str | None:
    """An optional image path: a non-empty string without NUL characters, or ``None``."""
    if value is None:
        return None
    text = parse_text(value, path, max_chars=MAX_PATH_CHARS)
    if "\x00" in text:
        raise LayoutError(path, f"file path contains a NUL character: {text!r}", value)
    return text


def parse_number(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LayoutError(path, f"expected a number, got {show(value)}", value)
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError) as err:
        raise LayoutError(path, f"not representable as a float: {show(value)}", value) from err
    if not math.isfinite(number):
        raise LayoutError(path, f"must be finite, got {number!r}", value)
    return number + 0.0  # -0.0 -> 0.0


def parse_int(value: object, path: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LayoutError(path, f"expected an integer, got {show(value)}", value)
    number = int(value)
    if minimum is not None and number < minimum:
        raise LayoutError(path, f"must be >= {minimum}, got {number}", value)
    if maximum is not None and number > maximum:
        raise LayoutError(path, f"must be <= {maximum}, got {number}", value)
    return number


def parse_size(value: object, path: str) -> int:
    """Image width/height in pixels: a positive multiple of 8, at most 8192."""
    number = parse_int(value, path, minimum=SIZE_MULTIPLE, maximum=MAX_SIZE)
    if number % SIZE_MULTIPLE:
        raise LayoutError(path, f"must be a multiple of {SIZE_MULTIPLE}, got {number}", value)
    return number


def parse_version(value: object, path: str) -> int:
    """A schema version this code reads (1 or 2; version 2 added dialogue lines, version-1 data reads unchanged)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) not in SUPPORTED_VERSIONS:
        readable = " or ".join(map(str, SUPPORTED_VERSIONS))
        raise LayoutError(path, f"unsupported schema version {show(value)} (this code reads {readable})", value)
    return int(value)


def check_version_has(version: int, needed: int, path: str, what: str, value: object = None) -> None:
    """A field added in schema version ``needed`` used in data that says an older ``version``."""
    if version < needed:
        raise LayoutError(path, f"{what} needs schema version {needed} or later (this data says version {version})",
                          value)


def parse_box(value: object, path: str) -> Box:
    """A normalised ``[x0, y0, x1, y1]`` box with ``0 <= x0 < x1 <= 1`` and ``0 <= y0 < y1 <= 1``.

    Coordinates outside ``[0, 1]`` by at most :data:`BOX_EPSILON` (rounding in an editor) are clamped with a logged
    warning; anything further out is an error.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Sequence):
        raise LayoutError(path, f"expected a list of 4 numbers [x0, y0, x1, y1], got {show(value)}", value)
    if len(value) != 4:
        raise LayoutError(path, f"expected 4 numbers [x0, y0, x1, y1], got {len(value)}: {show(value)}", value)
    coords = []
    for name, raw in zip(_COORDS, value):
        if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
            raise LayoutError(path, f"{name} is not a number: {show(raw)}", value)
        try:
            number = float(raw) + 0.0
        except (OverflowError, ValueError, TypeError) as err:
            raise LayoutError(path, f"{name} is not representable as a float: {show(raw)}", value) from err
        if not math.isfinite(number):
            raise LayoutError(path, f"{name} must be finite, got {number!r}", value)
        if number < 0.0 or number > 1.0:
            if number < -BOX_EPSILON or number > 1.0 + BOX_EPSILON:
                raise LayoutError(path, f"{name} {number!r} is outside [0, 1]", value)
            clamped = min(max(number, 0.0), 1.0)
            logger.warning("%s: %s %r is outside [0, 1] by <= %g; clamped to %r", path, name, number, BOX_EPSILON,
                           clamped)
            number = clamped
        coords.append(number)
    x0, y0, x1, y1 = coords
    for lo_name, lo, hi_name, hi, what in (("x0", x0, "x1", x1, "width"), ("y0", y0, "y1", y1, "height")):
        if hi < lo:
            raise LayoutError(path, f"{hi_name} {hi!r} < {lo_name} {lo!r}", value)
        if hi == lo:
            raise LayoutError(path, f"{hi_name} {hi!r} == {lo_name} {lo!r} (zero {what})", value)
    return (x0, y0, x1, y1)
