"""The bubble placer: where each line of a panel goes, at what size, wrapped how, and where its tail points.

Plain inputs, testable alone: the panel size, the lines in reading order (:class:`BubbleRequest`: text, style, the
speaker's box in panel pixels) and the character boxes to keep clear. For every line, largest font first (from
``start_size`` shrinking by 15 % down to ``min_size``), every wrap of the text (1 line up to 8) and a grid of
candidate positions (panel corners and edges, beside and above the speaker, an even 9 x 9 grid) are scored:

- overlap with any character box (inflated by a small clearance): 100 x the covered share of the bubble;
- reading order against the panel's earlier bubbles: 5 per violation (a later bubble may not sit clearly higher
  than an earlier one, nor, at the same height, further left: further right for right-to-left reading);
- tails crossing another bubble, tail or character: 3 each;
- distance to the speaker's box (2 x the share of the panel diagonal), plus up to 0.45 the lower the bubble sits
  beside the box (above the speaker's head is free); lines without a speaker box (narration, captions, unknown
  boxes) want the top, reading-start corner;
- shrinking the text: 1.0 x the share of the starting size lost.

Bubbles never overlap each other (a hard rule, with a gap). A line takes its cheapest place among those clear of
every character and in reading order (smaller sizes are tried while shrinking could still pay off); if none is
clear, the least-overlapping one. Text that cannot fit the panel at ``min_size`` is cut with an ellipsis
(``fits=False``). Lines are placed one after the other; a panel that is not clean is placed again in a few other
ways and the best arrangement kept (:func:`place_bubbles`).

Tails are triangles from the body to the nearest point of the speaker's box (at most 35 % of the panel's short side
long); a speaker with no known box gets a short tail towards the panel centre; narration and captions have none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .bubble_text import Variant, shape_cost, variants, whole

__all__ = ["BUBBLE_STYLES", "Bubble", "BubbleRequest", "place_bubbles"]

BUBBLE_STYLES = ("speech", "thought", "shout", "caption")
Box = tuple[float, float, float, float]
_CLEARANCE = 2  # pixels kept between a bubble and a character box
_GAP = 4  # pixels between two bubbles
_TAIL_ROOM = 10  # pixels left for a tail between a bubble beside its speaker and the speaker's box
_GRID = 9
_SHRINK_COST = 1.0  # cost of shrinking the text to nothing (linear in the size lost)
_PASSES = ((0.0, 1.0), (0.6, 1.0), (2.0, 1.0), (0.6, 0.75))  # (pull towards the top, share of the start size)


def check_line(text: object, style: object) -> None:
    """A line to letter: non-empty ``text`` in one of :data:`BUBBLE_STYLES`; ``ValueError`` naming the field."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text: expected non-empty text, got {text!r}")
    if style not in BUBBLE_STYLES:
        raise ValueError(f"style: expected one of {BUBBLE_STYLES}, got {style!r}")


@dataclass(frozen=True)
class BubbleRequest:
    """One line to letter: ``target`` is the speaker's box in panel pixels (``None``: unknown or off-panel);
    ``speaker`` False means narration (no tail)."""

    text: str
    style: str = "speech"
    target: Box | None = None
    speaker: bool = True

    def __post_init__(self) -> None:
        check_line(self.text, self.style)


@dataclass(frozen=True)
class Bubble:
    """A placed line. ``box``: everything but the tail (panel pixels, x0 y0 x1 y1); ``body``: the ellipse or
    rectangle that holds the text; ``tail``: ``()`` or (base, base, tip) points."""

    index: int
    style: str
    box: tuple[int, int, int, int]
    body: Box
    lines: tuple[str, ...]
    font_size: int
    line_height: int
    tail: tuple[tuple[float, float], ...]
    fits: bool
    overlaps_character: bool


def _anchors(lo: float, hi: float, extra: Sequence[float]) -> np.ndarray:
    values = np.concatenate([np.linspace(lo, hi, _GRID), np.asarray(extra, dtype=np.float64)])
    return np.unique(np.round(np.clip(values, lo, hi)))


class _Scorer:
    def __init__(self, panel: tuple[int, int], obstacles: Sequence[Box], reading: str, inset: int,
                 top_pull: float = 0.0) -> None:
        self.w, self.h = panel
        self.top_pull = top_pull
        self.inset = inset
        self.rtl = reading == "rtl"
        self.obstacles = np.asarray([(x0 - _CLEARANCE, y0 - _CLEARANCE, x1 + _CLEARANCE, y1 + _CLEARANCE)
                                     for x0, y0, x1, y1 in obstacles], dtype=np.float64).reshape(-1, 4)
        self.raw = [tuple(o) for o in obstacles]
        self.placed: list[tuple[int, int, int, int]] = []
        self.tails: list[tuple[tuple[float, float], tuple[float, float]]] = []  # placed tails: centre -> tip

    def candidates(self, variant: Variant, target: Box | None) -> np.ndarray:
        ow, oh = variant.outer
        lo_x, hi_x, lo_y, hi_y = self.inset, self.w - self.inset - ow, self.inset, self.h - self.inset - oh
        ex, ey = [], []
        if target is not None:
            tx0, ty0, tx1, ty1 = target
            gap = _TAIL_ROOM
            ex = [(tx0 + tx1 - ow) / 2, tx0 - ow - gap, tx1 + gap, tx0, tx1 - ow]
            ey = [ty0 - oh - gap, (ty0 + ty1 - oh) / 2, ty1 + gap, ty0]
        xs, ys = _anchors(lo_x, hi_x, ex), _anchors(lo_y, hi_y, ey)
        gx, gy = np.meshgrid(xs, ys)
        x0, y0 = gx.ravel(), gy.ravel()
        return np.stack([x0, y0, x0 + ow, y0 + oh], axis=1)

    @staticmethod
    def _inter(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
        """(N, M) intersection areas."""
        if len(others) == 0:
            return np.zeros((len(boxes), 0))
        w = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0])
        h = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1])
        return np.clip(w, 0, None) * np.clip(h, 0, None)

    def score(self, boxes: np.ndarray, request: BubbleRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per candidate: covered share of the bubble, reading-order violations, and the total cost (inf where it
        would touch an earlier bubble)."""
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        cover = self._inter(boxes, self.obstacles).sum(axis=1) / area
        placed = np.asarray(self.placed, dtype=np.float64).reshape(-1, 4)
        grown = placed + np.array([-_GAP, -_GAP, _GAP, _GAP])
        clash = (self._inter(boxes, grown) > 0).any(axis=1)
        order = np.zeros(len(boxes))
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        for p in placed:
            tol = 0.5 * np.minimum(boxes[:, 3] - boxes[:, 1], p[3] - p[1])
            above = boxes[:, 1] < p[1] - tol
            same_band = np.abs(boxes[:, 1] - p[1]) <= tol
            backwards = cx > (p[0] + p[2]) / 2 if self.rtl else cx < (p[0] + p[2]) / 2
            order += above | (same_band & backwards)
        target = request.target
        if target is not None:
            tx0, ty0, tx1, ty1 = target
            dx = np.maximum.reduce([tx0 - boxes[:, 2], np.zeros(len(boxes)), boxes[:, 0] - tx1])
            dy = np.maximum.reduce([ty0 - boxes[:, 3], np.zeros(len(boxes)), boxes[:, 1] - ty1])
            near = 2.0 * np.hypot(dx, dy) / math.hypot(self.w, self.h)
            below = ((boxes[:, 1] + boxes[:, 3]) / 2 - ty0) / max(ty1 - ty0, 1.0)  # comics letter above heads
            near += 0.3 * np.clip(below, 0.0, 1.5)
        else:
            start = (self.w - boxes[:, 2]) if self.rtl else boxes[:, 0]
            weight = 2.0 if request.style == "caption" else 1.0
            near = weight * (boxes[:, 1] - self.inset) / self.h + 0.3 * (start - self.inset) / self.w
        cost = 100.0 * cover + 5.0 * order + 3.0 * self.crossings(boxes, request) + near
        cost += self.top_pull * (boxes[:, 1] - self.inset) / self.h
        return cover, order, np.where(clash, np.inf, cost)

    def crossings(self, boxes: np.ndarray, request: BubbleRequest) -> np.ndarray:
        """Per candidate: placed tails it would cover, plus (for a speaker with a box) whether its own tail, centre
        to the nearest point of the box, would cross a placed bubble or another character."""
        count = np.zeros(len(boxes))
        for p0, p1 in self.tails:
            count += _segment_hits(np.asarray(p0), np.asarray(p1), boxes)
        target = request.target
        if target is None or not request.speaker or request.style == "caption":
            return count
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        tip = np.stack([np.clip(centre[:, 0], target[0], target[2]), np.clip(centre[:, 1], target[1], target[3])],
                       axis=1)
        for rect in [*self.placed, *(o for o in self.raw if o != tuple(target))]:
            count += _segment_hits(centre, tip, np.asarray(rect, dtype=np.float64)[None])
        return count


def _segment_hits(p0: np.ndarray, p1: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """Whether segments ``p0 -> p1`` pass through rectangles (x0, y0, x1, y1), broadcast over rows (Liang-Barsky);
    a segment that starts inside its rectangle does not count (a tail leaves its own bubble)."""
    p0, p1, rects = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (p0, p1, rects))
    n = max(len(p0), len(p1), len(rects))
    p0, p1, rects = np.broadcast_to(p0, (n, 2)), np.broadcast_to(p1, (n, 2)), np.broadcast_to(rects, (n, 4))
    d = p1 - p0
    lo, hi = np.zeros(len(d)), np.ones(len(d))
    ok = np.ones(len(d), dtype=bool)
    for p, q in ((-d[:, 0], p0[:, 0] - rects[:, 0]), (d[:, 0], rects[:, 2] - p0[:, 0]),
                 (-d[:, 1], p0[:, 1] - rects[:, 1]), (d[:, 1], rects[:, 3] - p0[:, 1])):
        parallel = p == 0
        ok &= ~(parallel & (q < 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(parallel, 0.0, q / np.where(parallel, 1.0, p))
        lo = np.where(~parallel & (p < 0), np.maximum(lo, t), lo)
        hi = np.where(~parallel & (p > 0), np.minimum(hi, t), hi)
    inside = (rects[:, 0] < p0[:, 0]) & (p0[:, 0] < rects[:, 2]) & (rects[:, 1] < p0[:, 1]) & (p0[:, 1] < rects[:, 3])
    return ok & (lo <= hi) & ~inside


def _tail(bubble_body: Box, style: str, request: BubbleRequest, panel: tuple[int, int], size: int,
          deco: float) -> tuple[tuple[float, float], ...]:
    if style == "caption" or not request.speaker:
        return ()
    x0, y0, x1, y1 = bubble_body
    cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    short = min(panel)
    if request.target is not None:
        tx0, ty0, tx1, ty1 = request.target
        if tx0 <= cx <= tx1 and ty0 <= cy <= ty1:
            return ()  # the bubble sits on its speaker: no direction to point in
        tip = (min(max(cx, tx0), tx1), min(max(cy, ty0), ty1))
        reach = 0.35 * short
    else:
        tip, reach = (panel[0] / 2, panel[1] / 2), 0.18 * short
    dx, dy = tip[0] - cx, tip[1] - cy
    dist = math.hypot(dx, dy)
    if dist < 1e-6:
        return ()
    ux, uy = dx / dist, dy / dist
    edge_t = 1.0 / math.hypot(ux / a, uy / b)  # centre to the body's edge along (ux, uy)
    shortest = 1.7 * size + 6.0 if style == "thought" else max(10.0, 0.7 * size)  # room for 3 thought circles
    outside = edge_t + (deco if style == "thought" else 0.0)  # a thought trail starts outside the cloud's bumps
    length = min(max(dist - outside, shortest), reach)
    tip = (cx + ux * (outside + length), cy + uy * (outside + length))
    half = min(max(0.18 * min(a, b), 3.0), 14.0)
    mx, my = cx + ux * edge_t * 0.75, cy + uy * edge_t * 0.75
    return (mx - uy * half, my + ux * half), (mx + uy * half, my - ux * half), tip


def _place_one(scorer: _Scorer, request: BubbleRequest, sizes: list[int], font_at, room: tuple[int, int],
               start_size: int) -> tuple[Variant, np.ndarray, bool, bool]:
    """The best (variant, outer box, covers a character, text fits) for one request, given the bubbles placed:
    clear of characters first, then in reading order, then the lowest cost, shrinking costing
    :data:`_SHRINK_COST` x the share of ``start_size`` lost (so a much nearer place may win over a larger font)."""
    best, best_key = None, None
    for size in sizes:
        shrink = _SHRINK_COST * (1.0 - size / start_size)
        if best_key is not None and not best_key[0] and not best_key[1] and shrink >= best_key[2]:
            break  # clear and in order already: no smaller size can cost less
        force = size == sizes[-1] and best is None
        for variant in variants(request.text, request.style, font_at, size, room, force=force):
            boxes = scorer.candidates(variant, request.target)
            cover, order, cost = scorer.score(boxes, request)
            cost = cost + shape_cost(variant, request.style)
            k = int(np.argmin(cost))
            if not np.isfinite(cost[k]):
                continue
            key = (cover[k] > 0, order[k] > 0, cost[k] + shrink)
            if best_key is None or key < best_key:
                best, best_key = (variant, boxes[k], bool(cover[k] > 0), whole(request.text, variant.lines)), key
    if best is None:  # no room left beside the other bubbles: the smallest bubble in the top corner
        variant = variants(request.text, request.style, font_at, sizes[-1], room, force=True)[0]
        ow, oh = variant.outer
        box = np.array([scorer.inset, scorer.inset, scorer.inset + ow, scorer.inset + oh], dtype=np.float64)
        best = (variant, box, bool(scorer.score(box[None], request)[0][0] > 0), False)
    return best


def _segments_cross(p1, p2, q1, q2) -> bool:
    def side(a, b, c) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    return side(p1, p2, q1) * side(p1, p2, q2) < 0 and side(q1, q2, p1) * side(q1, q2, p2) < 0


def _box_edges(box: Box):
    x0, y0, x1, y1 = box
    return (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0)))


def _crossings(bubbles: Sequence[Bubble], requests: Sequence[BubbleRequest], obstacles: Sequence[Box]) -> int:
    """Tails (body centre to tip) that cross another tail, another bubble or a character other than the speaker."""
    def segment(b: Bubble):
        return ((b.body[0] + b.body[2]) / 2, (b.body[1] + b.body[3]) / 2), b.tail[2]

    count = 0
    for i, a in enumerate(bubbles):
        if not a.tail:
            continue
        p1, p2 = segment(a)
        others = [b.box for j, b in enumerate(bubbles) if j != i]
        others += [tuple(o) for o in obstacles if tuple(o) != tuple(requests[i].target or ())]
        count += any(_segments_cross(p1, p2, e1, e2) for box in others for e1, e2 in _box_edges(box))
        count += sum(bool(b.tail) and _segments_cross(p1, p2, *segment(b)) for b in bubbles[i + 1:])
    return count


@dataclass(frozen=True)
class _Job:
    panel: tuple[int, int]
    requests: tuple[BubbleRequest, ...]
    obstacles: tuple[Box, ...]
    font_at: Callable[[int], object]
    reading: str
    inset: int
    start_size: int
    min_size: int

    @property
    def room(self) -> tuple[int, int]:
        return max(1, self.panel[0] - 2 * self.inset), max(1, self.panel[1] - 2 * self.inset)

    def sizes(self, scale: float = 1.0) -> list[int]:
        sizes = [max(self.min_size, round(self.start_size * scale))]
        while sizes[-1] > self.min_size:
            sizes.append(max(self.min_size, math.floor(sizes[-1] * 0.85)))
        return sizes

    def scorer(self, top_pull: float = 0.0) -> _Scorer:
        return _Scorer(self.panel, self.obstacles, self.reading, self.inset, top_pull)


def _first_choices(job: _Job, count: int) -> list[tuple[Variant, np.ndarray]]:
    """Up to ``count`` good, well apart places for the first line (clear of characters, cheapest first)."""
    scorer, request, found = job.scorer(), job.requests[0], []
    for size in job.sizes():
        shrink = _SHRINK_COST * (1.0 - size / job.start_size)
        for variant in variants(request.text, request.style, job.font_at, size, job.room, force=False):
            boxes = scorer.candidates(variant, request.target)
            cover, _, cost = scorer.score(boxes, request)
            cost = cost + shape_cost(variant, request.style) + shrink
            for k in np.flatnonzero((cover == 0) & np.isfinite(cost)):
                found.append((float(cost[k]), variant, boxes[k]))
    found.sort(key=lambda item: item[0])
    chosen: list[tuple[Variant, np.ndarray]] = []
    apart = 0.2 * min(job.panel)
    for _, variant, box in found:
        centre = (box[:2] + box[2:]) / 2
        if all(np.hypot(*(centre - (b[:2] + b[2:]) / 2)) > apart for _, b in chosen):
            chosen.append((variant, box))
            if len(chosen) == count:
                break
    return chosen


def _arrange(job: _Job, top_pull: float, scale: float, first=None) -> tuple[list[Bubble], tuple]:
    """Lines placed one by one (``first``: the first line's variant and box, given); with the arrangement's key:
    bubbles on characters, lines out of order, lines cut, tails crossing, then the summed cost."""
    scorer, plain = job.scorer(top_pull), job.scorer()
    sizes = job.sizes(scale)
    bubbles, orders, total = [], 0, 0.0
    for index, request in enumerate(job.requests):
        if index == 0 and first is not None:
            variant, box = first
            covers, fits = False, whole(request.text, variant.lines)
        else:
            variant, box, covers, fits = _place_one(scorer, request, sizes, job.font_at, job.room, job.start_size)
        cover, order, cost = plain.score(box[None], request)
        orders += int(order[0] > 0)
        total += float(cost[0]) + shape_cost(variant, request.style) + _SHRINK_COST * (
            1.0 - variant.size / job.start_size)
        outer = tuple(int(v) for v in box)
        d = variant.deco
        body = (outer[0] + d, outer[1] + d, outer[0] + d + variant.body_w, outer[1] + d + variant.body_h)
        tail = _tail(body, request.style, request, job.panel, variant.size, d)
        for s in (scorer, plain):
            s.placed.append(outer)
            if tail:
                s.tails.append((((body[0] + body[2]) / 2, (body[1] + body[3]) / 2), tail[2]))
        bubbles.append(Bubble(index, request.style, outer, body, variant.lines, variant.size, variant.line_h, tail,
                              fits, covers))
    key = (sum(b.overlaps_character for b in bubbles), orders, sum(not b.fits for b in bubbles),
           _crossings(bubbles, job.requests, job.obstacles), total)
    return bubbles, key


def place_bubbles(panel: tuple[int, int], requests: Sequence[BubbleRequest], obstacles: Sequence[Box],
                  font_at: Callable[[int], object], *, start_size: int = 20, min_size: int = 8,
                  reading: str = "ltr", inset: int = 4) -> list[Bubble]:
    """Places ``requests`` (in reading order) in a ``panel`` (width, height) clear of the ``obstacles`` (character
    boxes, panel pixels); ``font_at(size)`` gives the lettering font at a size. Returns one :class:`Bubble` per
    request, in the same order.

    Lines are placed one by one (greedy). Unless that gives a clean panel (no bubble on a character, all in
    reading order, nothing cut, no tail crossing another tail, bubble or character, full-size text), the panel is
    placed again with a pull towards the top (later lines then find room below the earlier ones), with every line
    starting at 3/4 of the size (an early line leaves room for the later ones), and from each of 5 places for the
    first line; the best arrangement is kept: fewest bubbles on characters, then out of order, then cut, then
    tails crossing, then the lowest summed cost.
    """
    if reading not in ("ltr", "rtl"):
        raise ValueError(f"reading: expected 'ltr' or 'rtl', got {reading!r}")
    if min_size < 1 or start_size < min_size:
        raise ValueError(f"start_size: expected {min_size} or more (min_size {min_size}), got {start_size}")
    job = _Job(tuple(panel), tuple(requests), tuple(tuple(o) for o in obstacles), font_at, reading, inset,
               start_size, min_size)
    if not job.requests:
        return []
    best, best_key = _arrange(job, *_PASSES[0])
    if best_key[:4] == (0, 0, 0, 0) and all(b.font_size == start_size for b in best):
        return best
    tries = [(top_pull, scale, None) for top_pull, scale in _PASSES[1:]]
    if len(job.requests) > 1:
        tries += [(0.0, 1.0, first) for first in _first_choices(job, 5)]
    for top_pull, scale, first in tries:
        bubbles, key = _arrange(job, top_pull, scale, first)
        if key < best_key:
            best, best_key = bubbles, key
    return best
