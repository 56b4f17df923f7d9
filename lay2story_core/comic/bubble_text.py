"""Bubble text: wrapping a line (words never cut; CJK between characters) and the bubble sizes around it, for
:mod:`.bubbles`. A speech/thought/shout body is an ellipse that holds the text block (sqrt 2 times its sides, plus
padding), a caption a padded rectangle; thought clouds and shout spikes reach a little beyond the body."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .fonts import wrap_caption

__all__ = ["MAX_LINES", "Variant", "shape_cost", "variants", "whole"]

_SQRT2 = math.sqrt(2.0)
MAX_LINES = 8  # the most lines a bubble wraps to


@dataclass(frozen=True)
class Variant:
    """One way to letter a line: its font size, wrapped lines, line height, body size and decoration reach."""

    size: int
    lines: tuple[str, ...]
    line_h: int
    body_w: float
    body_h: float
    deco: float  # how far spikes / cloud bumps reach beyond the body

    @property
    def outer(self) -> tuple[int, int]:
        return math.ceil(self.body_w + 2 * self.deco), math.ceil(self.body_h + 2 * self.deco)


def _shape(style: str, text_w: float, text_h: float, size: int) -> tuple[float, float, float]:
    """Body width, height and decoration reach around a ``text_w`` x ``text_h`` text block."""
    pad = max(3.0, 0.35 * size)
    if style == "caption":
        return text_w + 2 * pad, text_h + 1.4 * pad, 0.0
    body_w, body_h = text_w * _SQRT2 + 2 * pad, text_h * _SQRT2 + 1.2 * pad
    short = min(body_w, body_h)
    deco = {"thought": max(2.0, 0.09 * short), "shout": max(3.0, 0.16 * short)}.get(style, 0.0)
    return body_w, body_h, deco


def whole(text: str, lines: Sequence[str]) -> bool:
    """Whether ``lines`` show all of ``text`` (not cut with an ellipsis)."""
    return "".join("".join(lines).split()) == "".join(text.split())


_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(rf"(\s*)([{_CJK}]|[^\s{_CJK}]+)")


def _tokens(text: str) -> list[tuple[str, str]]:
    """``(separator, token)`` pairs: words, and each CJK character on its own (CJK breaks between characters)."""
    return [(" " if sep else "", token) for sep, token in _TOKEN.findall(text.strip())]


def _greedy_wrap(tokens: list[tuple[str, str]], widths: list[float], space: float,
                 limit: float) -> tuple[str, ...]:
    """Tokens into lines of about ``limit`` pixels (a word is never cut; a long one gets a line of its own)."""
    lines, current, width = [], "", 0.0
    for (sep, token), w in zip(tokens, widths):
        gap = space if sep else 0.0
        if current and width + gap + w > limit:
            lines.append(current)
            current, width = "", 0.0
        if current:
            current, width = current + sep + token, width + gap + w
        else:
            current, width = token, w
    lines.append(current)
    return tuple(lines)


def _balanced_wrap(tokens: list[tuple[str, str]], widths: list[float], space: float, n: int,
                   natural: float) -> tuple[str, ...]:
    """The narrowest greedy wrap into at most ``n`` lines (binary search on the line width)."""
    lo, hi = max(widths), natural
    for _ in range(12):
        mid = (lo + hi) / 2
        if len(_greedy_wrap(tokens, widths, space, mid)) <= n:
            hi = mid
        else:
            lo = mid
    return _greedy_wrap(tokens, widths, space, hi)


def variants(text: str, style: str, font_at: Callable[[int], object], size: int, room: tuple[int, int],
              force: bool) -> list[Variant]:
    """Every wrap of ``text`` at ``size`` whose bubble fits ``room`` (with ``force``: the best cut-down one)."""
    font = font_at(size)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + max(1, size // 8)
    tokens = _tokens(text)
    widths = [font.getlength(token) for _, token in tokens]
    space = font.getlength(" ")
    natural = sum(widths) + space * sum(bool(sep) for sep, _ in tokens[1:])
    out, seen = [], set()
    for n in range(1, min(len(tokens), MAX_LINES) + 1):
        lines = _balanced_wrap(tokens, widths, space, n, natural)
        if lines in seen or len(lines) > MAX_LINES:
            continue
        seen.add(lines)
        text_w = max(font.getlength(line) for line in lines)
        variant = Variant(size, lines, line_h, *_shape(style, text_w, line_h * len(lines), size))
        if variant.outer[0] <= room[0] and variant.outer[1] <= room[1]:
            out.append(variant)
    if out or not force:
        return out
    # nothing fits: wrap to the room's width and cut the lines that do not fit its height
    for max_lines in range(MAX_LINES, 0, -1):
        width = max(1, math.floor((room[0] - 2 * max(3.0, 0.35 * size)) / (1.0 if style == "caption" else _SQRT2)))
        lines = tuple(wrap_caption(text, font, width, max_lines)) or ("\u2026",)
        text_w = max(font.getlength(line) for line in lines)
        variant = Variant(size, lines, line_h, *_shape(style, text_w, line_h * len(lines), size))
        if variant.outer[1] <= room[1] or max_lines == 1:
            return [variant]
    return []


def shape_cost(variant: Variant, style: str) -> float:
    """Tall, narrow bubbles read badly: a small cost below a width:height of 1.3 (captions: 1.0)."""
    ratio = variant.body_w / variant.body_h
    return 0.25 * max(0.0, (1.0 if style == "caption" else 1.3) - ratio)
