// Lay2Story box editor: a reusable canvas widget for per-frame subject boxes (ES module, no build step, no
// dependencies, no ComfyUI import; web/js/lay2story.js wires it into ComfyUI).
//
// Part 1, pure layout-state functions (no DOM; unit-tested with `node --test tests/web/box_canvas.test.mjs`).
// Coordinates are normalised to the frame: [x0, y0, x1, y1] in [0, 1]. The Python schema (lay2story_core.story) is
// authoritative; parseLayoutText mirrors its checks so that the canvas never edits a layout Python would reject for
// a structural reason, and it keeps unknown keys so a round trip through the editor loses nothing.
// Part 2, BoxCanvasEditor: the DOM editor built on them (touches `document` only when constructed).

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

// ---------------------------------------------------------------------------------------------------------------
// Part 2: the DOM editor.

const PALETTE = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292"];
const NEW_CHARACTER = "\u0000new";
const NUDGE = 0.01;

function el(tag, props = {}, style = {}) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  Object.assign(node.style, style);
  return node;
}

function button(text, title, onClick) {
  const b = el("button", { type: "button", textContent: text, title }, {
    padding: "1px 6px", font: "inherit", cursor: "pointer", borderRadius: "4px",
    border: "1px solid var(--border-color, #555)", background: "var(--comfy-input-bg, #222)",
    color: "var(--input-text, #ddd)",
  });
  b.addEventListener("click", (e) => {
    e.stopPropagation();
    onClick();
  });
  return b;
}

/**
 * A canvas editor for a Layout: per-frame boxes (draw on empty space, drag inside to move, drag an edge/corner to
 * resize, Delete/Backspace or the button to delete, arrow keys to nudge), a character picker and a caption field for
 * the selected box, frame paging (prev/next, "frame i / n", add/remove), an optional background image per frame and
 * a raw JSON view. Every change calls `onChange(layoutText)`; hand-edited text from the JSON view goes to
 * `onText(text)` (valid or not), so the host can keep it as typed.
 */
export class BoxCanvasEditor {
  constructor(container, { onChange = () => {}, onText = null, aspect = 1, minSize = MIN_BOX_SIZE, handlePx = 7 } = {}) {
    this.onChange = onChange;
    this.onText = onText;
    this.minSize = minSize;
    this.handlePx = handlePx;
    this.defaultAspect = aspect;
    this.layout = null;
    this.text = "";
    this.error = null;
    this.frame = 0;
    this.selected = -1;
    this.drag = null;
    this.preview = null;
    this.preferred = null;
    this.backgrounds = [];
    this.images = new Map();
    this._build(container);
    this.resizeObserver = typeof ResizeObserver === "function" ? new ResizeObserver(() => this.redraw()) : null;
    this.resizeObserver?.observe(this.canvasWrap);
    this.setLayoutText(JSON.stringify(emptyLayout()));
  }

  // ----------------------------------------------------------------------------------------------- public API
  /** Loads layout text. Returns true when it parsed; otherwise shows the error, keeps the text and disables edits. */
  setLayoutText(text) {
    this.text = typeof text === "string" ? text : String(text ?? "");
    try {
      this.layout = parseLayoutText(this.text);
      this.error = null;
    } catch (err) {
      this.layout = null;
      this.error = err.message;
    }
    if (this.layout) {
      this.frame = clamp(this.frame, 0, Math.max(0, this.layout.frames.length - 1));
      if (this.selected >= this._subjects().length) this.selected = -1;
    } else {
      this.selected = -1;
    }
    this.drag = null;
    this.preview = null;
    if (this.error) this.jsonArea.style.display = ""; // show the text that needs fixing
    if (this.jsonArea.style.display !== "none" && document.activeElement !== this.jsonArea) this.jsonArea.value = this.text;
    this._refresh();
    return this.layout !== null;
  }

  getLayoutText() {
    return this.text;
  }

  selectFrame(index) {
    if (!this.layout || this.layout.frames.length === 0) return;
    this.frame = clamp(index, 0, this.layout.frames.length - 1);
    this.selected = -1;
    this._refresh();
  }

  /** Background image URLs, one per frame (a single URL serves every frame). */
  setBackgrounds(urls) {
    this.backgrounds = [...(urls ?? [])];
    for (const url of [...this.images.keys()]) if (!this.backgrounds.includes(url)) this.images.delete(url);
    for (const url of this.backgrounds) {
      if (this.images.has(url)) continue;
      const img = new Image();
      img.onload = () => this.redraw();
      img.src = url;
      this.images.set(url, img);
    }
    this.redraw();
  }

  /** The frame aspect ratio (width / height) used when the frame has no background image. */
  setAspect(aspect) {
    this.defaultAspect = aspect > 0 && Number.isFinite(aspect) ? aspect : 1;
    this.redraw();
  }

  /** Adds character ids the layout lacks (e.g. a connected story's); emits a change only when one was added. */
  addCharacters(ids) {
    if (!this.layout) return;
    const valid = (id) => {
      try {
        checkId(id, "character");
        return true;
      } catch {
        return false;
      }
    };
    const missing = [...new Set(ids ?? [])].filter((id) => valid(id) && !this.layout.characters.includes(id));
    if (missing.length === 0) return;
    this.layout.characters.push(...missing);
    this._emit();
  }

  destroy() {
    this.resizeObserver?.disconnect();
    this.root.remove();
  }

  // ------------------------------------------------------------------------------------------------- building
  _build(container) {
    const row = { display: "flex", gap: "4px", alignItems: "center", flexWrap: "wrap" };
    this.root = el("div", { className: "l2s-box-editor", tabIndex: -1 }, {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%", boxSizing: "border-box",
      font: "12px sans-serif", color: "var(--input-text, #ddd)", outline: "none", userSelect: "none",
    });
    const nav = el("div", { className: "l2s-nav" }, row);
    this.prevButton = button("\u25C0", "Previous frame", () => this.selectFrame(this.frame - 1));
    this.frameLabel = el("span", { className: "l2s-frame-label" }, { minWidth: "70px", textAlign: "center" });
    this.nextButton = button("\u25B6", "Next frame", () => this.selectFrame(this.frame + 1));
    this.addFrameButton = button("+ frame", "Add an empty frame after this one", () => this._addFrame());
    this.removeFrameButton = button("\u2212 frame", "Remove this frame", () => this._removeFrame());
    this.jsonButton = button("{ }", "Show / hide the layout JSON", () => this._toggleJson());
    nav.append(this.prevButton, this.frameLabel, this.nextButton, this.addFrameButton, this.removeFrameButton,
      el("span", {}, { flex: "1" }), this.jsonButton);

    this.canvasWrap = el("div", { className: "l2s-canvas-wrap" }, { flex: "1", minHeight: "120px", position: "relative" });
    this.canvas = el("canvas", { className: "l2s-canvas", tabIndex: 0 }, {
      position: "absolute", inset: "0", width: "100%", height: "100%", outline: "none", cursor: "crosshair",
      touchAction: "none",
    });
    this.canvasWrap.append(this.canvas);

    const props = el("div", { className: "l2s-props" }, row);
    this.characterSelect = el("select", { className: "l2s-character", title: "Character of the selected box" });
    this.newCharacterInput = el("input", { className: "l2s-new-character", placeholder: "new character id" },
      { display: "none", width: "110px" });
    this.captionInput = el("input", { className: "l2s-caption", placeholder: "subject caption (optional)",
      title: "How the character looks in this frame; empty = the frame's global caption" }, { flex: "1", minWidth: "80px" });
    this.deleteButton = button("\u2715", "Delete the selected box (Delete / Backspace)", () => this._deleteSelected());
    props.append(this.characterSelect, this.newCharacterInput, this.captionInput, this.deleteButton);

    this.jsonArea = el("textarea", { className: "l2s-json", spellcheck: false },
      { display: "none", height: "90px", resize: "vertical", font: "11px monospace" });
    this.status = el("div", { className: "l2s-status" }, { minHeight: "14px", whiteSpace: "nowrap", overflow: "hidden",
      textOverflow: "ellipsis" });
    this.root.append(nav, this.canvasWrap, props, this.jsonArea, this.status);
    container.append(this.root);

    this.canvas.addEventListener("pointerdown", (e) => this._pointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this._pointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this._pointerUp(e, false));
    this.canvas.addEventListener("pointercancel", (e) => this._pointerUp(e, true));
    this.root.addEventListener("keydown", (e) => this._keyDown(e));
    this.characterSelect.addEventListener("change", () => this._pickCharacter(this.characterSelect.value));
    this.newCharacterInput.addEventListener("keydown", (e) => {
      if (e.key === "Enter") this._addCharacter(this.newCharacterInput.value);
      if (e.key === "Escape") this._refresh();
    });
    this.newCharacterInput.addEventListener("blur", () => {
      if (this.newCharacterInput.style.display !== "none" && this.newCharacterInput.value.trim()) {
        this._addCharacter(this.newCharacterInput.value);
      }
    });
    this.captionInput.addEventListener("input", () => this._setCaption(this.captionInput.value));
    this.jsonArea.addEventListener("input", () => this._jsonTyped(this.jsonArea.value));
  }

  // ---------------------------------------------------------------------------------------------- state edits
  _subjects() {
    return this.layout?.frames[this.frame]?.subjects ?? [];
  }

  _emit(status = "") {
    this.text = layoutToText(this.layout);
    if (this.jsonArea.style.display !== "none") this.jsonArea.value = this.text;
    this._refresh(status);
    this.onChange(this.text);
  }

  _addFrame() {
    if (!this.layout) return;
    if (this.layout.frames.length >= MAX_FRAMES) return this._refresh(`at most ${MAX_FRAMES} frames`);
    const at = this.layout.frames.length === 0 ? 0 : this.frame + 1;
    this.layout.frames.splice(at, 0, { subjects: [] });
    this.frame = at;
    this.selected = -1;
    this._emit();
  }

  _removeFrame() {
    if (!this.layout || this.layout.frames.length <= 1) return;
    this.layout.frames.splice(this.frame, 1);
    this.frame = Math.min(this.frame, this.layout.frames.length - 1);
    this.selected = -1;
    this._emit();
  }

  _deleteSelected() {
    if (!this.layout || this.selected < 0) return;
    this._subjects().splice(this.selected, 1);
    this.selected = -1;
    this._emit();
  }

  _pickCharacter(value) {
    if (!this.layout) return;
    if (value === NEW_CHARACTER) {
      this.newCharacterInput.value = newCharacterId(this.layout);
      this.newCharacterInput.style.display = "";
      this.newCharacterInput.focus();
      this.newCharacterInput.select();
      return;
    }
    const subject = this._subjects()[this.selected];
    this.preferred = value;
    if (!subject || subject.character === value) return;
    if (this._subjects().some((s) => s.character === value)) return this._refresh(`${value} already has a box in this frame`);
    subject.character = value;
    this._emit();
  }

  _addCharacter(raw) {
    const id = String(raw ?? "").trim();
    this.newCharacterInput.style.display = "none";
    this.newCharacterInput.value = "";
    try {
      checkId(id, "character");
    } catch (err) {
      return this._refresh(err.message);
    }
    if (!this.layout.characters.includes(id)) this.layout.characters.push(id);
    this.preferred = id;
    const subject = this._subjects()[this.selected];
    if (subject && !this._subjects().some((s) => s.character === id)) subject.character = id;
    this._emit();
  }

  _setCaption(value) {
    const subject = this._subjects()[this.selected];
    if (!subject) return;
    if (value.trim()) subject.caption = value.slice(0, MAX_CAPTION_CHARS);
    else delete subject.caption;
    this._emit();
  }

  _jsonTyped(text) {
    this.setLayoutText(text);
    if (this.onText) this.onText(text);
  }

  _toggleJson() {
    const show = this.jsonArea.style.display === "none";
    this.jsonArea.style.display = show ? "" : "none";
    if (show) this.jsonArea.value = this.text;
    this.redraw();
  }

  // ---------------------------------------------------------------------------------------------------- input
  _frameRect() {
    return fitRect(this.canvas.clientWidth, this.canvas.clientHeight, this._aspect());
  }

  _aspect() {
    const img = this.images.get(backgroundFor(this.backgrounds, this.frame));
    return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth / img.naturalHeight : this.defaultAspect;
  }

  /** Pointer position in frame coordinates; CSS transforms (ComfyUI zoom) are undone via the bounding rect. */
  _point(e) {
    const r = this.canvas.getBoundingClientRect();
    const sx = r.width > 0 ? this.canvas.clientWidth / r.width : 1;
    const sy = r.height > 0 ? this.canvas.clientHeight / r.height : 1;
    const f = this._frameRect();
    return {
      x: f.w > 0 ? ((e.clientX - r.left) * sx - f.x) / f.w : 0,
      y: f.h > 0 ? ((e.clientY - r.top) * sy - f.y) / f.h : 0,
    };
  }

  _tolerance() {
    const f = this._frameRect();
    return [f.w > 0 ? this.handlePx / f.w : 0, f.h > 0 ? this.handlePx / f.h : 0];
  }

  _pointerDown(e) {
    if (e.button !== 0) return;
    e.stopPropagation(); // no preventDefault: ComfyUI's change tracker listens for the mouseup that follows
    this.canvas.focus();
    if (!this.layout || this.layout.frames.length === 0) return;
    const p = this._point(e);
    const [tx, ty] = this._tolerance();
    const hit = hitTest(this._subjects().map((s) => s.box ?? null), p.x, p.y, tx, ty, this.selected);
    if (hit) {
      this.selected = hit.index;
      this.drag = { mode: hit.handle, start: p, orig: [...this._subjects()[hit.index].box] };
    } else {
      this.selected = -1;
      this.drag = { mode: "draw", start: p };
    }
    this.canvas.setPointerCapture?.(e.pointerId);
    this._refresh();
  }

  _pointerMove(e) {
    if (!this.layout) return;
    const p = this._point(e);
    const drag = this.drag;
    if (!drag) {
      const [tx, ty] = this._tolerance();
      const hit = hitTest(this._subjects().map((s) => s.box ?? null), p.x, p.y, tx, ty, this.selected);
      this.canvas.style.cursor = cursorForHandle(hit?.handle);
      return;
    }
    e.stopPropagation();
    if (drag.mode === "draw") {
      this.preview = boxFromDrag(drag.start.x, drag.start.y, p.x, p.y, 0);
    } else {
      const subject = this._subjects()[this.selected];
      subject.box = drag.mode === "move"
        ? moveBox(drag.orig, p.x - drag.start.x, p.y - drag.start.y)
        : resizeBox(drag.orig, drag.mode, p.x, p.y, this.minSize);
    }
    this.redraw();
  }

  _pointerUp(e, cancelled) {
    const drag = this.drag;
    if (!drag || !this.layout) return;
    e.stopPropagation();
    this.drag = null;
    this.preview = null;
    this.canvas.releasePointerCapture?.(e.pointerId);
    const p = this._point(e);
    if (drag.mode === "draw") {
      const box = cancelled ? null : boxFromDrag(drag.start.x, drag.start.y, p.x, p.y, this.minSize);
      if (!box) return this._refresh();
      return this._addBox(box);
    }
    const subject = this._subjects()[this.selected];
    if (cancelled) subject.box = drag.orig;
    if (subject.box.some((v, i) => v !== drag.orig[i])) this._emit();
    else this._refresh();
  }

  _addBox(box) {
    let status = "";
    let character = freeCharacter(this.layout, this.frame, this.preferred);
    if (character === null) {
      character = newCharacterId(this.layout, this.layout.characters.length ? "character" : "hero");
      this.layout.characters.push(character);
      status = `added character ${character}`;
    }
    this._subjects().push({ character, box });
    this.selected = this._subjects().length - 1;
    this._emit(status);
  }

  _keyDown(e) {
    const tag = e.target?.tagName;
    e.stopPropagation(); // keys typed into the editor are not ComfyUI shortcuts (Delete would delete the node)
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || !this.layout) return;
    const subject = this._subjects()[this.selected];
    if ((e.key === "Delete" || e.key === "Backspace") && subject) {
      e.preventDefault();
      this._deleteSelected();
    } else if (e.key === "Escape") {
      this.selected = -1;
      this._refresh();
    } else if (e.key.startsWith("Arrow") && subject?.box) {
      e.preventDefault();
      const step = e.shiftKey ? NUDGE * 5 : NUDGE;
      const d = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[e.key];
      subject.box = moveBox(subject.box, d[0], d[1]);
      this._emit();
    } else if (e.key === "PageUp" || e.key === "PageDown") {
      e.preventDefault();
      this.selectFrame(this.frame + (e.key === "PageUp" ? -1 : 1));
    }
  }

  // -------------------------------------------------------------------------------------------------- display
  _refresh(status = "") {
    const ok = this.layout !== null;
    const n = ok ? this.layout.frames.length : 0;
    this.frameLabel.textContent = ok ? (n ? `frame ${this.frame + 1} / ${n}` : "no frames") : "frame - / -";
    this.prevButton.disabled = !ok || this.frame <= 0;
    this.nextButton.disabled = !ok || this.frame >= n - 1;
    this.addFrameButton.disabled = !ok;
    this.removeFrameButton.disabled = !ok || n <= 1;
    const subject = this._subjects()[this.selected];
    const used = new Set(this._subjects().map((s) => s.character));
    this.characterSelect.replaceChildren();
    for (const id of ok ? this.layout.characters : []) {
      const taken = used.has(id) && id !== subject?.character;
      this.characterSelect.append(el("option", { value: id, textContent: taken ? `${id} (in frame)` : id, disabled: !!subject && taken }));
    }
    if (ok) this.characterSelect.append(el("option", { value: NEW_CHARACTER, textContent: "+ new character\u2026" }));
    this.characterSelect.value = subject?.character ?? this.preferred ?? this.layout?.characters[0] ?? "";
    this.characterSelect.disabled = !ok;
    this.newCharacterInput.style.display = "none";
    if (document.activeElement !== this.captionInput || !subject) this.captionInput.value = subject?.caption ?? "";
    this.captionInput.disabled = !subject;
    this.deleteButton.disabled = !subject;
    this.status.textContent = this.error ? `Layout error: ${this.error}` : status;
    this.status.style.color = this.error ? "#ff6b6b" : "";
    this.status.title = this.status.textContent;
    this.root.dataset.state = this.error ? "error" : "ok";
    this.redraw();
  }

  redraw() {
    const c = this.canvas;
    const dpr = globalThis.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!(w > 0 && h > 0)) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, w, h);
    const f = this._frameRect();
    ctx.fillStyle = "#2a2a2a";
    ctx.fillRect(f.x, f.y, f.w, f.h);
    const img = this.images.get(backgroundFor(this.backgrounds, this.frame));
    if (this.layout && img && img.complete && img.naturalWidth > 0) ctx.drawImage(img, f.x, f.y, f.w, f.h);
    ctx.strokeStyle = "rgba(255,255,255,0.08)";
    ctx.lineWidth = 1;
    for (const t of [1 / 3, 2 / 3]) {
      ctx.beginPath();
      ctx.moveTo(f.x + t * f.w, f.y);
      ctx.lineTo(f.x + t * f.w, f.y + f.h);
      ctx.moveTo(f.x, f.y + t * f.h);
      ctx.lineTo(f.x + f.w, f.y + t * f.h);
      ctx.stroke();
    }
    ctx.font = "12px sans-serif";
    ctx.textBaseline = "top";
    if (!this.layout) return this._centerText(ctx, f, "layout JSON has an error (see below); the text is kept as is");
    if (this.layout.frames.length === 0) return this._centerText(ctx, f, "no frames: press + frame");
    const subjects = this._subjects();
    const boxless = [];
    subjects.forEach((s, i) => {
      if (s.box) this._drawBox(ctx, f, s, i === this.selected);
      else boxless.push(s.character);
    });
    if (this.preview) {
      const [x0, y0, x1, y1] = this.preview;
      ctx.setLineDash([5, 4]);
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(f.x + x0 * f.w, f.y + y0 * f.h, (x1 - x0) * f.w, (y1 - y0) * f.h);
      ctx.setLineDash([]);
    }
    if (subjects.length === 0 && !this.preview) this._centerText(ctx, f, "drag to draw a box");
    if (boxless.length) {
      ctx.fillStyle = "#aaa";
      ctx.fillText(`no box: ${boxless.join(", ")}`, f.x + 4, f.y + f.h - 16);
    }
  }

  _centerText(ctx, f, text) {
    ctx.fillStyle = "#888";
    ctx.textAlign = "center";
    ctx.fillText(text, f.x + f.w / 2, f.y + f.h / 2 - 6, f.w - 8);
    ctx.textAlign = "left";
  }

  _drawBox(ctx, f, subject, selected) {
    const colour = PALETTE[Math.max(0, this.layout.characters.indexOf(subject.character)) % PALETTE.length];
    const [x0, y0, x1, y1] = subject.box;
    const x = f.x + x0 * f.w;
    const y = f.y + y0 * f.h;
    const bw = (x1 - x0) * f.w;
    const bh = (y1 - y0) * f.h;
    ctx.fillStyle = `${colour}33`;
    ctx.fillRect(x, y, bw, bh);
    ctx.strokeStyle = colour;
    ctx.lineWidth = selected ? 3 : 1.5;
    ctx.strokeRect(x, y, bw, bh);
    const label = subject.caption ? `${subject.character}: ${subject.caption}` : subject.character;
    ctx.fillStyle = colour;
    ctx.fillText(label, x + 4, y + 3, Math.max(10, bw - 8));
    if (!selected) return;
    const s = this.handlePx;
    ctx.fillStyle = "#fff";
    for (const [hx, hy] of [[x, y], [x + bw / 2, y], [x + bw, y], [x + bw, y + bh / 2], [x + bw, y + bh],
      [x + bw / 2, y + bh], [x, y + bh], [x, y + bh / 2]]) {
      ctx.fillRect(hx - s / 2, hy - s / 2, s, s);
    }
  }
}
