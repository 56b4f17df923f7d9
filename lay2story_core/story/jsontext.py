"""JSON text in and out for stories and layouts: strict parsing (duplicate keys are errors) with line/column
messages, and deterministic output."""

from __future__ import annotations

import json

from .errors import LayoutError
from .fields import show

JSON_PATH = "<json>"


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise LayoutError(JSON_PATH, f"duplicate key {key!r} in one object", key)
        out[key] = value
    return out


def loads(text: object) -> object:
    """Parses JSON text (``str`` or UTF-8 ``bytes``); every failure is a :class:`LayoutError` at ``"<json>"``."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise LayoutError(JSON_PATH, f"not UTF-8 text: {err}", None) from err
    if not isinstance(text, str):
        raise LayoutError(JSON_PATH, f"expected JSON text (str), got {show(text)}", text)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except LayoutError:
        raise
    except json.JSONDecodeError as err:
        raise LayoutError(JSON_PATH, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", None) from err
    except RecursionError as err:
        raise LayoutError(JSON_PATH, "JSON is nested too deeply", None) from err
    except ValueError as err:  # e.g. an integer literal over Python's digit limit
        raise LayoutError(JSON_PATH, f"invalid JSON: {err}", None) from err


def dumps(data: dict, indent: int | None = 2) -> str:
    return json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
