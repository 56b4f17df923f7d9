// Lay2Story layout state: the pure functions of the box editor (no DOM; unit-tested with
// `node --test tests/web/box_canvas.test.mjs`). Coordinates are normalised to the frame: [x0, y0, x1, y1] in
// [0, 1]. Parsing and checking (the Python schema's rules) live in layout_schema.js, re-exported here; this module
// has the geometry (drag, move, resize, snap, hit-test) and the edits (characters, frames, copies).

import { LAYOUT_VERSION, frameHasContent } from "./layout_schema.js";

export * from "./layout_schema.js";

export const MIN_BOX_SIZE = 0.02;
export const COORD_DIGITS = 4;
export const SNAP_GRID = 8;
const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];

export function clamp(v, lo, hi) {
  return Math.min(Math.max(v, lo), hi);
}

export function clamp01(v) {
  return clamp(v, 0, 1);
}

export function roundCoord(v) {
  const f = 10 ** COORD_DIGITS;
  return Math.round(v * f) / f + 0; // + 0 turns -0 into 0
}

/** Orders the corners, clamps to [0, 1] and grows the box to at least minSize per side (staying inside). */
export function normalizeBox(box, minSize = MIN_BOX_SIZE) {
  let x0 = clamp01(Math.min(box[0], box[2]));
  let x1 = clamp01(Math.max(box[0], box[2]));
  let y0 = clamp01(Math.min(box[1], box[3]));
  let y1 = clamp01(Math.max(box[1], box[3]));
  const size = clamp(minSize, 0, 1);
  if (x1 - x0 < size) {
    x1 = Math.min(1, x0 + size);
    x0 = x1 - size;
  }
  if (y1 - y0 < size) {
    y1 = Math.min(1, y0 + size);
    y0 = y1 - size;
  }
  return [roundCoord(x0), roundCoord(y0), roundCoord(x1), roundCoord(y1)];
}

/** The box dragged from (ax, ay) to (bx, by), or null when the drag is smaller than minSize on either axis. */
export function boxFromDrag(ax, ay, bx, by, minSize = MIN_BOX_SIZE) {
  const x0 = clamp01(Math.min(ax, bx));
  const x1 = clamp01(Math.max(ax, bx));
  const y0 = clamp01(Math.min(ay, by));
  const y1 = clamp01(Math.max(ay, by));
  if (x1 - x0 < minSize || y1 - y0 < minSize) return null;
  return [roundCoord(x0), roundCoord(y0), roundCoord(x1), roundCoord(y1)];
}

/** The box shifted by (dx, dy), with its size kept and the shift limited so that it stays inside the frame. */
export function moveBox(box, dx, dy) {
  const w = box[2] - box[0];
  const h = box[3] - box[1];
  const x0 = clamp(box[0] + dx, 0, Math.max(0, 1 - w));
  const y0 = clamp(box[1] + dy, 0, Math.max(0, 1 - h));
  return [roundCoord(x0), roundCoord(y0), roundCoord(x0 + w), roundCoord(y0 + h)];
}

/**
 * The box with the edges of `handle` ("n", "se", ...) dragged to (x, y): clamped to [0, 1], never flipped, and never
 * smaller than minSize (or than what the frame leaves, for a box already hugging an edge).
 */
export function resizeBox(box, handle, x, y, minSize = MIN_BOX_SIZE) {
  if (!HANDLES.includes(handle)) throw new Error(`resizeBox: unknown handle ${JSON.stringify(handle)}`);
  let [x0, y0, x1, y1] = box;
  if (handle.includes("w")) x0 = clamp(Math.min(x, x1 - minSize), 0, x1);
  if (handle.includes("e")) x1 = clamp(Math.max(x, x0 + minSize), x0, 1);
  if (handle.includes("n")) y0 = clamp(Math.min(y, y1 - minSize), 0, y1);
  if (handle.includes("s")) y1 = clamp(Math.max(y, y0 + minSize), y0, 1);
  return [roundCoord(x0), roundCoord(y0), roundCoord(x1), roundCoord(y1)];
}

function hitOne(box, x, y, tolX, tolY) {
  const [x0, y0, x1, y1] = box;
  if (x < x0 - tolX || x > x1 + tolX || y < y0 - tolY || y > y1 + tolY) return null;
  const nearW = Math.abs(x - x0) <= tolX;
  const nearE = !nearW && Math.abs(x - x1) <= tolX;
  const nearN = Math.abs(y - y0) <= tolY;
  const nearS = !nearN && Math.abs(y - y1) <= tolY;
  const v = nearN ? "n" : nearS ? "s" : "";
  const h = nearW ? "w" : nearE ? "e" : "";
  if (v || h) return v + h;
  return "move";
}

/**
 * What the point (x, y) grabs: {index, handle} with handle "move" (inside) or one of the 8 edge/corner handles
 * (within tolX/tolY of an edge), or null for empty space. `boxes[i]` may be null (a subject without a box). The
 * selected box is tried first, then the others from the top (last drawn) down.
 */
export function hitTest(boxes, x, y, tolX, tolY, selected = -1) {
  const order = [];
  if (selected >= 0 && selected < boxes.length) order.push(selected);
  for (let i = boxes.length - 1; i >= 0; i--) if (i !== selected) order.push(i);
  for (const i of order) {
    if (!boxes[i]) continue;
    const handle = hitOne(boxes[i], x, y, tolX, tolY);
    if (handle) return { index: i, handle };
  }
  return null;
}

export function cursorForHandle(handle) {
  if (!handle) return "crosshair";
  if (handle === "move") return "move";
  if (handle === "n" || handle === "s") return "ns-resize";
  if (handle === "e" || handle === "w") return "ew-resize";
  return handle === "nw" || handle === "se" ? "nwse-resize" : "nesw-resize";
}

export function emptyLayout(frames = 4, characters = ["hero"]) {
  return {
    version: LAYOUT_VERSION,
    characters: [...characters],
    frames: Array.from({ length: frames }, () => ({ subjects: [] })),
  };
}

/** The layout as JSON text: boxes rounded to COORD_DIGITS decimals, empty captions dropped. */
export function layoutToText(layout) {
  const out = {
    ...layout,
    frames: layout.frames.map((frame) => ({
      ...frame,
      subjects: frame.subjects.map((subject) => {
        const s = { ...subject };
        if (s.box) s.box = s.box.map(roundCoord);
        if (s.caption === null || (typeof s.caption === "string" && !s.caption.trim())) delete s.caption;
        return s;
      }),
    })),
  };
  return JSON.stringify(out);
}

/** The first character (in the layout's order) with no subject in frame `frameIndex`, or null when all are used. */
export function freeCharacter(layout, frameIndex, preferred = null) {
  const used = new Set(layout.frames[frameIndex].subjects.map((s) => s.character));
  if (preferred !== null && layout.characters.includes(preferred) && !used.has(preferred)) return preferred;
  return layout.characters.find((c) => !used.has(c)) ?? null;
}

/** A character id not yet in the layout: `base`, else `base2`, `base3`, ... */
export function newCharacterId(layout, base = "character") {
  if (!layout.characters.includes(base)) return base;
  let k = 2;
  while (layout.characters.includes(`${base}${k}`)) k++;
  return `${base}${k}`;
}

/** The background URL of frame i: its own, or the only one when a single background serves every frame. */
export function backgroundFor(urls, i) {
  if (!urls || urls.length === 0) return null;
  if (urls.length === 1) return urls[0];
  return urls[i] ?? null;
}

/** The largest rect of aspect `aspect` (width / height) centred in a w x h area: {x, y, w, h}. */
export function fitRect(w, h, aspect) {
  if (!(w > 0) || !(h > 0)) return { x: 0, y: 0, w: 0, h: 0 };
  const a = aspect > 0 && Number.isFinite(aspect) ? aspect : 1;
  let fw = w;
  let fh = w / a;
  if (fh > h) {
    fh = h;
    fw = h * a;
  }
  return { x: (w - fw) / 2, y: (h - fh) / 2, w: fw, h: fh };
}

// ------------------------------------------------------------------------------------------------- snapping
/** Snap targets for Shift-drags: the 1/8 grid and the edges of the frame's other boxes. */
export function snapTargets(boxes, except = -1, grid = SNAP_GRID) {
  const xs = [];
  const ys = [];
  for (let k = 0; k <= grid; k++) {
    xs.push(k / grid);
    ys.push(k / grid);
  }
  boxes.forEach((b, i) => {
    if (!b || i === except) return;
    xs.push(b[0], b[2]);
    ys.push(b[1], b[3]);
  });
  return { xs, ys };
}

/** The target nearest to v within tol, else v. */
export function snapValue(v, targets, tol) {
  let best = v;
  let bestD = tol;
  for (const t of targets) {
    const d = Math.abs(t - v);
    if (d <= bestD) {
      best = t;
      bestD = d;
    }
  }
  return best;
}

function bestShift(edges, targets, tol) {
  let shift = 0;
  let bestD = tol;
  for (const e of edges) {
    for (const t of targets) {
      const d = Math.abs(t - e);
      if (d <= bestD) {
        shift = t - e;
        bestD = d;
      }
    }
  }
  return shift;
}

/** A moved box shifted (size kept) so that its nearest edge on each axis lands on a target within tol. */
export function snapMove(box, targets, tolX, tolY) {
  const dx = bestShift([box[0], box[2]], targets.xs, tolX);
  const dy = bestShift([box[1], box[3]], targets.ys, tolY);
  return moveBox(box, dx, dy);
}

/** A resized (or drawn: handle "nwse") box with each dragged edge snapped to a target within tol. */
export function snapEdges(box, handle, targets, tolX, tolY, minSize = MIN_BOX_SIZE) {
  let [x0, y0, x1, y1] = box;
  if (handle.includes("w")) x0 = snapValue(x0, targets.xs, tolX);
  if (handle.includes("e")) x1 = snapValue(x1, targets.xs, tolX);
  if (handle.includes("n")) y0 = snapValue(y0, targets.ys, tolY);
  if (handle.includes("s")) y1 = snapValue(y1, targets.ys, tolY);
  if (x1 - x0 < minSize || y1 - y0 < minSize) return box.map(roundCoord);
  return [roundCoord(x0), roundCoord(y0), roundCoord(x1), roundCoord(y1)];
}

// ---------------------------------------------------------------------------------------------------- edits
function copySubject(s) {
  const out = { ...s };
  if (s.box) out.box = [...s.box];
  return out;
}

function sameSubject(a, b) {
  const boxA = a.box ?? null;
  const boxB = b.box ?? null;
  const sameBox = boxA === boxB || (boxA !== null && boxB !== null && boxA.every((v, i) => v === boxB[i]));
  return sameBox && (a.caption ?? "") === (b.caption ?? "");
}

/**
 * Copies frame `from`'s boxes (all, or only subject `index`) into each frame in `to`, never over a box: a character
 * that already has a box in a target frame keeps it there. Returns {frames, copied, kept}: how many target frames,
 * and [{frame, character}] for each box copied and each box kept (only where it differs from the copy).
 */
export function copyBoxes(layout, from, to, index = -1) {
  const source = layout.frames[from].subjects;
  const subjects = index >= 0 ? [source[index]] : source;
  const frames = to.filter((f) => f !== from && f >= 0 && f < layout.frames.length);
  const copied = [];
  const kept = [];
  for (const f of frames) {
    const target = layout.frames[f].subjects;
    for (const s of subjects) {
      const there = target.find((t) => t.character === s.character);
      if (!there) {
        target.push(copySubject(s));
        copied.push({ frame: f, character: s.character });
      } else if (!sameSubject(there, s)) {
        kept.push({ frame: f, character: s.character });
      }
    }
  }
  return { frames: frames.length, copied, kept };
}

function listed(items, most = 4) {
  return items.length <= most ? items.join(", ") : `${items.slice(0, most).join(", ")} and ${items.length - most} more`;
}

function framesText(numbers) {
  return numbers.length === 1 ? `frame ${numbers[0]}` : `frames ${listed(numbers)}`;
}

/** The status line for a copyBoxes report (frames numbered from 1): what was copied, what was kept and why. */
export function copySummary({ frames, copied, kept }) {
  if (!frames) return "no other frame to copy to";
  const parts = [];
  if (copied.length) {
    const who = [...new Set(copied.map((e) => e.character))];
    parts.push(`copied ${listed(who)} to ${framesText([...new Set(copied.map((e) => e.frame + 1))])}`);
  }
  if (kept.length) {
    const where = listed(kept.map((e) => `${e.character} in frame ${e.frame + 1}`));
    const them = kept.length === 1 ? "it" : "them";
    parts.push(`kept the box${kept.length === 1 ? "" : "es"} already there (${where}): delete ${them} there first to ` +
      `replace ${them}`);
  }
  return parts.length ? parts.join("; ") : "nothing copied: the same boxes are already there";
}

/** The box shifted by `offset` on both axes (back the other way where the frame ends). */
export function offsetBox(box, offset = 0.04) {
  const dx = box[2] + offset <= 1 ? offset : -offset;
  const dy = box[3] + offset <= 1 ? offset : -offset;
  return moveBox(box, dx, dy);
}

/**
 * Drops characters that no box and no dialogue line uses, except those in `keep` (the story's, the picker's
 * choice); puts `first` (the story's characters, in order) at the front. Returns true when the list changed.
 */
export function pruneCharacters(layout, keep = [], first = []) {
  const used = new Set(layout.frames.flatMap((f) => [...f.subjects.map((s) => s.character),
    ...(f.dialogue ?? []).map((line) => line.speaker).filter((id) => typeof id === "string")]));
  const kept = new Set(keep);
  const rest = layout.characters.filter((c) => !first.includes(c) && (used.has(c) || kept.has(c)));
  const extra = [...used].filter((c) => !first.includes(c) && !rest.includes(c));
  const next = [...first, ...rest, ...extra];
  const changed = next.length !== layout.characters.length || next.some((c, i) => c !== layout.characters[i]);
  layout.characters = next;
  return changed;
}

/**
 * Pads the layout with empty frames up to `count` and drops trailing empty frames (no boxes, no dialogue lines)
 * past it; true when changed.
 */
export function fitFrames(layout, count) {
  if (!(count > 0)) return false;
  let changed = false;
  while (layout.frames.length < count) {
    layout.frames.push({ subjects: [] });
    changed = true;
  }
  while (layout.frames.length > count && !frameHasContent(layout.frames[layout.frames.length - 1])) {
    layout.frames.pop();
    changed = true;
  }
  return changed;
}

/** Layout text for people: two-space indents, each box on one line. */
export function prettyLayoutText(layout) {
  const text = JSON.stringify(JSON.parse(layoutToText(layout)), null, 2);
  return text.replace(/"box": \[\s*([^\]]*?)\s*\]/g, (_, inner) => `"box": [${inner.split(/,\s*/).join(", ")}]`);
}

/** A box in pixels of a `width` x `height` frame: {x, y, w, h}, rounded. */
export function boxPixels(box, width, height) {
  return {
    x: Math.round(box[0] * width), y: Math.round(box[1] * height),
    w: Math.round((box[2] - box[0]) * width), h: Math.round((box[3] - box[1]) * height),
  };
}
