// Lay2Story layout state: the pure functions of the box editor (no DOM; unit-tested with
// `node --test tests/web/box_canvas.test.mjs`). Coordinates are normalised to the frame: [x0, y0, x1, y1] in
// [0, 1]. The Python schema (lay2story_core.story) is authoritative; parseLayoutText mirrors its checks so that the
// canvas never edits a layout Python would reject for a structural reason, and it keeps unknown keys so a round
// trip through the editor loses nothing.

export const LAYOUT_VERSION = 1;
export const MIN_BOX_SIZE = 0.02;
export const COORD_DIGITS = 4;
export const MAX_CAPTION_CHARS = 1000;
export const MAX_ID_CHARS = 128;
export const MAX_FRAMES = 256;
const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];

/** An error in layout text, naming the field path like the Python LayoutError ("frames[2].subjects[0].box: ..."). */
export class LayoutTextError extends Error {
  constructor(path, detail) {
    super(`${path}: ${detail}`);
    this.name = "LayoutTextError";
    this.path = path;
    this.detail = detail;
  }
}

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

function describe(value) {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

export function checkId(value, path) {
  if (typeof value !== "string" || !value.trim()) throw new LayoutTextError(path, `expected a non-empty string, got ${describe(value)}`);
  if (value !== value.trim()) throw new LayoutTextError(path, `must not start or end with whitespace, got ${describe(value)}`);
  if (value.length > MAX_ID_CHARS) throw new LayoutTextError(path, `is ${value.length} characters, over ${MAX_ID_CHARS}`);
}

export function checkBox(box, path) {
  if (!Array.isArray(box) || box.length !== 4) {
    throw new LayoutTextError(path, `expected 4 numbers [x0, y0, x1, y1], got ${describe(box)}`);
  }
  const names = ["x0", "y0", "x1", "y1"];
  box.forEach((v, i) => {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new LayoutTextError(path, `${names[i]} is not a number: ${describe(v)}`);
    if (v < -1e-3 || v > 1 + 1e-3) throw new LayoutTextError(path, `${names[i]} ${v} is outside [0, 1]`);
  });
  const [x0, y0, x1, y1] = box.map(clamp01);
  if (!(x1 > x0)) throw new LayoutTextError(path, `x1 ${box[2]} must be greater than x0 ${box[0]}`);
  if (!(y1 > y0)) throw new LayoutTextError(path, `y1 ${box[3]} must be greater than y0 ${box[1]}`);
}

function checkKeys(obj, path, allowed) {
  const unknown = Object.keys(obj).filter((k) => !allowed.includes(k));
  if (unknown.length) {
    throw new LayoutTextError(path, `unknown key(s) ${unknown.map((k) => JSON.stringify(k)).join(", ")} (allowed: ${allowed.join(", ")})`);
  }
}

/**
 * Parses and checks layout JSON text like Layout.from_json in Python (same keys, box rules, one subject per
 * character per frame); returns the layout object. A subject whose character is missing from `characters` gets
 * it appended (Python accepts such a layout; the picker needs the id). Throws LayoutTextError naming the field
 * ("layout_json" for syntax errors).
 */
export function parseLayoutText(text) {
  if (typeof text !== "string" || !text.trim()) throw new LayoutTextError("layout_json", "is empty");
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new LayoutTextError("layout_json", `invalid JSON (${err.message})`);
  }
  if (!isObject(data)) throw new LayoutTextError("layout", `expected a JSON object, got ${describe(data)}`);
  if (data.version !== LAYOUT_VERSION) {
    throw new LayoutTextError("layout.version", `unsupported schema version ${describe(data.version)} (expected ${LAYOUT_VERSION})`);
  }
  checkKeys(data, "layout", ["version", "frames", "characters"]);
  const characters = data.characters ?? [];
  if (!Array.isArray(characters)) throw new LayoutTextError("layout.characters", `expected a list of ids, got ${describe(characters)}`);
  characters.forEach((c, i) => {
    checkId(c, `layout.characters[${i}]`);
    if (characters.indexOf(c) !== i) throw new LayoutTextError(`layout.characters[${i}]`, `duplicate character id ${describe(c)}`);
  });
  if (!Array.isArray(data.frames)) throw new LayoutTextError("layout.frames", `expected a list of frames, got ${describe(data.frames)}`);
  if (data.frames.length > MAX_FRAMES) throw new LayoutTextError("layout.frames", `${data.frames.length} frames exceed the limit of ${MAX_FRAMES}`);
  data.frames.forEach((frame, f) => {
    const fpath = `layout.frames[${f}]`;
    if (!isObject(frame)) throw new LayoutTextError(fpath, `expected a JSON object, got ${describe(frame)}`);
    checkKeys(frame, fpath, ["subjects"]);
    frame.subjects = frame.subjects ?? [];
    if (!Array.isArray(frame.subjects)) throw new LayoutTextError(`${fpath}.subjects`, `expected a list of subjects, got ${describe(frame.subjects)}`);
    const seen = new Set();
    frame.subjects.forEach((subject, s) => {
      const spath = `${fpath}.subjects[${s}]`;
      if (!isObject(subject)) throw new LayoutTextError(spath, `expected a JSON object, got ${describe(subject)}`);
      checkKeys(subject, spath, ["character", "box", "caption"]);
      if (!("character" in subject)) throw new LayoutTextError(`${spath}.character`, "missing required field");
      checkId(subject.character, `${spath}.character`);
      if (seen.has(subject.character)) throw new LayoutTextError(`${spath}.character`, `character ${describe(subject.character)} appears twice in this frame`);
      seen.add(subject.character);
      if (!characters.includes(subject.character)) characters.push(subject.character);
      if (subject.box === null) delete subject.box;
      if (subject.box !== undefined) {
        checkBox(subject.box, `${spath}.box`);
        subject.box = subject.box.map(clamp01);
      }
      const caption = subject.caption;
      if (caption !== undefined && caption !== null && typeof caption !== "string") {
        throw new LayoutTextError(`${spath}.caption`, `expected a string, got ${describe(caption)}`);
      }
      if (typeof caption === "string" && caption.length > MAX_CAPTION_CHARS) {
        throw new LayoutTextError(`${spath}.caption`, `is ${caption.length} characters, over the limit of ${MAX_CAPTION_CHARS}`);
      }
    });
  });
  data.characters = characters;
  return data;
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
