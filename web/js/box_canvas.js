// Lay2Story box editor: a reusable canvas widget for per-frame subject boxes (ES module, no build step, no
// dependencies, no ComfyUI import; web/js/lay2story.js wires it into ComfyUI). The pure layout functions live in
// layout_state.js / layout_schema.js (re-exported here), the drawing in canvas_draw.js and the right-click menu in
// editor_menu.js; this module is the editor's state, its DOM and its input handling.

import {
  MIN_BOX_SIZE,
  MAX_CAPTION_CHARS,
  MAX_FRAMES,
  clamp,
  boxFromDrag,
  moveBox,
  resizeBox,
  hitTest,
  cursorForHandle,
  emptyLayout,
  checkId,
  parseLayoutText,
  parseJsonStrict,
  layoutToText,
  prettyLayoutText,
  freeCharacter,
  backgroundFor,
  fitRect,
  snapTargets,
  snapMove,
  snapEdges,
  copyBoxes,
  offsetBox,
  pruneCharacters,
  fitFrames,
  boxPixels,
  storyProblems,
  pathLocation,
  humanPath,
} from "./layout_state.js";
import { drawFrame, centerText, colourFor, ERROR_COLOUR } from "./canvas_draw.js";
import { EditorMenu } from "./editor_menu.js";

export * from "./layout_state.js";

const NEW_CHARACTER = "\u0000new";
const NUDGE = 0.01;
const SNAP_PX = 8;
export const GESTURE_HINT = "drag: draw \u00B7 drag a box: move \u00B7 edges: resize \u00B7 Shift: snap \u00B7 " +
  "right-click: menu \u00B7 PgUp/PgDn: frame \u00B7 Del: delete";

function el(tag, props = {}, style = {}) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  Object.assign(node.style, style);
  return node;
}

export function button(text, title, onClick) {
  const b = el("button", { type: "button", textContent: text, title }, {
    padding: "1px 6px", font: "inherit", cursor: "pointer", borderRadius: "4px", whiteSpace: "nowrap", flex: "none",
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
 * resize, Shift to snap to a 1/8 grid and other boxes, Delete/Backspace, arrow keys to nudge, right-click menu),
 * a character picker and caption field for the selected box, frame paging with the frame's prompt, a frame strip,
 * the previous frame's boxes as a ghost, copies between frames, background images per frame and a JSON view.
 * Every change calls `onChange(layoutText)`; hand-edited text from the JSON view goes to `onText(text)` (valid or
 * not), so the host keeps it as typed.
 */
export class BoxCanvasEditor {
  constructor(container, { onChange = () => {}, onText = null, aspect = 1, minSize = MIN_BOX_SIZE, handlePx = 8 } = {}) {
    this.onChange = onChange;
    this.onText = onText;
    this.minSize = minSize;
    this.handlePx = handlePx;
    this.defaultAspect = aspect;
    this.layout = null;
    this.text = "";
    this.error = null; // {path, detail} of the text's first schema error
    this.raw = null; // the text's JSON value when it parses but breaks the schema (drawn, bad box in red)
    this.frame = 0;
    this.selected = -1;
    this.drag = null;
    this.preview = null;
    this.preferred = null;
    this.story = null; // {characters, prompts, width, height} of the connected story, when known
    this.frameSize = null; // [width, height] in pixels, when known
    this.backgrounds = { wired: [], run: [] };
    this.images = new Map();
    this.snapping = false;
    this._build(container);
    this.menu = new EditorMenu(this.root);
    this.resizeObserver = typeof ResizeObserver === "function" ? new ResizeObserver(() => this.redraw()) : null;
    this.resizeObserver?.observe(this.canvasWrap);
    this.setLayoutText(JSON.stringify(emptyLayout()));
  }

  // ----------------------------------------------------------------------------------------------- public API
  /** Loads layout text. Returns true when it parsed; otherwise shows the error, keeps the text and disables edits. */
  setLayoutText(text) {
    this.text = typeof text === "string" ? text : String(text ?? "");
    this.raw = null;
    try {
      this.layout = parseLayoutText(this.text);
      this.error = null;
    } catch (err) {
      this.layout = null;
      this.error = { path: err.path ?? "layout", detail: err.detail ?? err.message };
      try {
        this.raw = parseJsonStrict(this.text);
      } catch {
        this.raw = null;
      }
      const at = pathLocation(this.error.path);
      if (at.frame >= 0) this.frame = at.frame;
    }
    const n = this._frames().length;
    this.frame = clamp(this.frame, 0, Math.max(0, n - 1));
    if (!this.layout || this.selected >= this._subjects().length) this.selected = -1;
    this.drag = null;
    this.preview = null;
    this.menu.close();
    if (this.error) this.jsonArea.style.display = ""; // show the text that needs fixing
    if (this.jsonArea.style.display !== "none" && document.activeElement !== this.jsonArea) this._fillJsonArea();
    this._refresh();
    return this.layout !== null;
  }

  getLayoutText() {
    return this.text;
  }

  selectFrame(index) {
    const n = this._frames().length;
    if (n === 0) return;
    this.frame = clamp(index, 0, n - 1);
    this.selected = -1;
    this.menu.close();
    this._refresh();
  }

  /** Background image URLs per frame (one URL serves every frame). A wired background wins over a run's output. */
  setBackgrounds(urls, kind = "wired") {
    this.backgrounds[kind] = [...(urls ?? [])];
    const all = [...this.backgrounds.wired, ...this.backgrounds.run];
    for (const url of [...this.images.keys()]) if (!all.includes(url)) this.images.delete(url);
    for (const url of all) {
      if (this.images.has(url)) continue;
      const img = new Image();
      img.onload = () => this.redraw();
      img.src = url;
      this.images.set(url, img);
    }
    this.redraw();
  }

  /** The frame aspect ratio (width / height) used when neither the story nor a background gives one. */
  setAspect(aspect) {
    this.defaultAspect = aspect > 0 && Number.isFinite(aspect) ? aspect : 1;
    this.redraw();
  }

  /** The frame size in pixels (for the aspect and the x/y/w/h readout). */
  setFrameSize(width, height) {
    if (width > 0 && height > 0) {
      this.frameSize = [width, height];
      this.defaultAspect = width / height;
    }
    this._refresh();
  }

  /**
   * The connected story, read from the graph while editing ({characters: [ids], prompts: [frame prompts], width,
   * height}) or null when unknown. Its characters become the picker's (a layout character no box uses and the
   * story lacks is dropped), its frame count the layout's (empty frames added, trailing empty ones dropped).
   */
  setStory(info) {
    const key = JSON.stringify(info ?? null);
    if (key === this.storyKey) return;
    this.storyKey = key;
    this.story = info && Array.isArray(info.characters) ? info : null;
    if (info?.width > 0 && info?.height > 0) this.setFrameSize(info.width, info.height);
    if (this.layout && this.story) {
      const a = pruneCharacters(this.layout, [], this.story.characters);
      const b = Array.isArray(this.story.prompts) && fitFrames(this.layout, this.story.prompts.length);
      if (a || b) return this._emit();
    }
    this._refresh();
  }

  /** Adds character ids the layout lacks (a run's story, when the graph could not be read). */
  addCharacters(ids) {
    if (!this.layout || this.story) return;
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

  /** Redraws when the canvas's on-screen size (ComfyUI zoom, devicePixelRatio) changed since the last draw. */
  checkSize() {
    const check = () => {
      const [w, h] = this._backingSize();
      if (w !== this.canvas.width || h !== this.canvas.height) this.redraw();
    };
    check();
    // The host moves and scales the widget after drawing its own canvas: look again two frames later.
    if (this.sizeCheckPending || typeof requestAnimationFrame !== "function") return;
    this.sizeCheckPending = true;
    requestAnimationFrame(() => requestAnimationFrame(() => {
      this.sizeCheckPending = false;
      check();
    }));
  }

  destroy() {
    this.resizeObserver?.disconnect();
    this.menu.close();
    this.root.remove();
  }

  // ------------------------------------------------------------------------------------------------- building
  _build(container) {
    const row = { display: "flex", gap: "4px", alignItems: "center", flexWrap: "nowrap", minWidth: "0" };
    const small = { fontSize: "11px", color: "var(--descrip-text, #999)", overflow: "hidden", textOverflow: "ellipsis",
      whiteSpace: "nowrap" };
    this.root = el("div", { className: "l2s-box-editor", tabIndex: -1 }, {
      display: "flex", flexDirection: "column", gap: "3px", width: "100%", height: "100%", boxSizing: "border-box",
      font: "12px sans-serif", color: "var(--input-text, #ddd)", outline: "none", userSelect: "none",
      position: "relative", overflow: "hidden",
    });
    const nav = el("div", { className: "l2s-nav" }, { ...row, overflow: "hidden" });
    this.prevButton = button("\u25C0", "Previous frame (PgUp)", () => this.selectFrame(this.frame - 1));
    this.frameLabel = el("span", { className: "l2s-frame-label" }, { minWidth: "74px", textAlign: "center", flex: "none" });
    this.nextButton = button("\u25B6", "Next frame (PgDn)", () => this.selectFrame(this.frame + 1));
    this.addFrameButton = button("+ frame", "Add an empty frame after this one", () => this._addFrame());
    this.removeFrameButton = button("\u2212 frame", "Remove this frame", () => this._removeFrame());
    this.copyPrevButton = button("\u21E4 copy prev", "Copy the previous frame's boxes into this frame", () => this._copyFromPrevious());
    this.copyAllButton = button("copy to all", "Copy this frame's boxes to every other frame", () => this._copyToAll(-1));
    this.jsonButton = button("{ }", "Show / hide the layout JSON", () => this._toggleJson());
    nav.append(this.prevButton, this.frameLabel, this.nextButton, this.addFrameButton, this.removeFrameButton,
      this.copyPrevButton, this.copyAllButton, el("span", {}, { flex: "1" }), this.jsonButton);
    this.promptLine = el("div", { className: "l2s-frame-prompt" }, { ...small, fontSize: "12px", color: "var(--input-text, #ddd)", minHeight: "15px" });
    this.strip = el("div", { className: "l2s-strip" }, { ...row, overflowX: "auto", overflowY: "hidden", minHeight: "20px" });

    this.canvasWrap = el("div", { className: "l2s-canvas-wrap" }, { flex: "1", minHeight: "160px", position: "relative" });
    this.canvas = el("canvas", { className: "l2s-canvas", tabIndex: 0 }, {
      position: "absolute", inset: "0", width: "100%", height: "100%", outline: "none", cursor: "crosshair",
      touchAction: "none",
    });
    this.canvasWrap.append(this.canvas);

    const props = el("div", { className: "l2s-props" }, row);
    this.pickerLabel = el("span", { className: "l2s-picker-label" }, { flex: "none" });
    this.characterSelect = el("select", { className: "l2s-character" }, { flex: "none", maxWidth: "40%" });
    this.newCharacterInput = el("input", { className: "l2s-new-character", placeholder: "new character id" },
      { display: "none", width: "110px", flex: "none" });
    this.captionInput = el("input", { className: "l2s-caption" }, { flex: "1", minWidth: "60px" });
    this.readout = el("span", { className: "l2s-readout", title: "Position and size of the selected box" },
      { ...small, flex: "none", fontFamily: "monospace" });
    this.deleteButton = button("\u2715", "Delete the selected box (Delete / Backspace)", () => this._deleteSelected());
    props.append(this.pickerLabel, this.characterSelect, this.newCharacterInput, this.captionInput, this.readout,
      this.deleteButton);
    this.hint = el("div", { className: "l2s-hint", textContent: GESTURE_HINT, title: GESTURE_HINT }, small);

    this.jsonArea = el("textarea", { className: "l2s-json", spellcheck: false },
      { display: "none", height: "160px", minHeight: "60px", resize: "vertical", font: "11px monospace", flex: "none",
        whiteSpace: "pre", overflow: "auto" });
    this.status = el("div", { className: "l2s-status" }, { minHeight: "14px", whiteSpace: "normal",
      overflowWrap: "anywhere", flex: "none", userSelect: "text" });
    this.root.append(nav, this.promptLine, this.strip, this.canvasWrap, props, this.hint, this.jsonArea, this.status);
    container.append(this.root);

    this.canvas.addEventListener("pointerdown", (e) => this._pointerDown(e));
    this.canvas.addEventListener("pointermove", (e) => this._pointerMove(e));
    this.canvas.addEventListener("pointerup", (e) => this._pointerUp(e, false));
    this.canvas.addEventListener("pointercancel", (e) => this._pointerUp(e, true));
    this.canvas.addEventListener("contextmenu", (e) => this._contextMenu(e));
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
  _frames() {
    if (this.layout) return this.layout.frames;
    return Array.isArray(this.raw?.frames) ? this.raw.frames : [];
  }

  _subjects() {
    return this.layout?.frames[this.frame]?.subjects ?? [];
  }

  _emit(status = "") {
    const keep = this.story ? [] : [this.layout.characters[0], this.preferred].filter(Boolean);
    pruneCharacters(this.layout, keep, this.story?.characters ?? []);
    this.text = layoutToText(this.layout);
    if (this.jsonArea.style.display !== "none") this._fillJsonArea();
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

  _copyFromPrevious() {
    if (!this.layout || this.frame === 0) return this._refresh("frame 1 has no previous frame");
    if (!this.layout.frames[this.frame - 1].subjects.length) return this._refresh(`frame ${this.frame} has no boxes`);
    copyBoxes(this.layout, this.frame - 1, [this.frame]);
    this.selected = -1;
    this._emit(`copied frame ${this.frame}'s boxes into frame ${this.frame + 1}`);
  }

  /** Copies the frame's boxes (or box `index`) to every other frame. */
  _copyToAll(index) {
    if (!this.layout || (index < 0 && !this._subjects().length)) return this._refresh("this frame has no boxes");
    const all = this.layout.frames.map((_, f) => f);
    const n = copyBoxes(this.layout, this.frame, all, index);
    this._emit(`copied ${index >= 0 ? "the box" : "this frame's boxes"} to ${n} other frame${n === 1 ? "" : "s"}`);
  }

  _copyToNext(index) {
    if (!this.layout) return;
    if (this.frame + 1 >= this.layout.frames.length) return this._refresh("this is the last frame");
    copyBoxes(this.layout, this.frame, [this.frame + 1], index);
    this._emit(`copied the box to frame ${this.frame + 2}`);
  }

  _duplicate(index) {
    const source = this._subjects()[index];
    if (!source) return;
    const character = freeCharacter(this.layout, this.frame, this.preferred);
    if (character === null) return this._refresh(this._noFreeCharacter());
    const copy = { character, box: offsetBox(source.box ?? [0, 0, 1, 1]) };
    if (source.caption) copy.caption = source.caption;
    this._subjects().push(copy);
    this.selected = this._subjects().length - 1;
    this._emit(`duplicated as ${character}`);
  }

  _setBox(index, box) {
    const subject = this._subjects()[index];
    if (!subject) return;
    subject.box = box;
    this._emit();
  }

  _setCharacter(index, id) {
    const subject = this._subjects()[index];
    if (!subject || subject.character === id) return;
    if (this._subjects().some((s) => s.character === id)) return this._refresh(`${id} already has a box in this frame`);
    subject.character = id;
    this.preferred = id;
    this._emit();
  }

  _noFreeCharacter() {
    const who = this.layout.characters.join(", ");
    const more = this.story ? "add a character to the story for another box" : "add a character (+ new character\u2026)";
    return `every character already has a box in frame ${this.frame + 1} (${who}): ${more}`;
  }

  _pickCharacter(value) {
    if (!this.layout) return;
    if (value === NEW_CHARACTER) {
      this.newCharacterInput.value = "";
      this.newCharacterInput.style.display = "";
      this.newCharacterInput.focus();
      return;
    }
    if (this.selected >= 0) return this._setCharacter(this.selected, value);
    this.preferred = value;
    this._refresh();
  }

  _addCharacter(raw) {
    const id = String(raw ?? "").trim();
    this.newCharacterInput.style.display = "none";
    this.newCharacterInput.value = "";
    try {
      checkId(id, "character");
    } catch (err) {
      return this._refresh(`new character: ${err.detail}`);
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

  _fillJsonArea() {
    this.jsonArea.value = this.layout ? prettyLayoutText(this.layout) : this.text;
  }

  _toggleJson() {
    const show = this.jsonArea.style.display === "none";
    this.jsonArea.style.display = show ? "" : "none";
    if (show) this._fillJsonArea();
    this.redraw();
  }

  // ---------------------------------------------------------------------------------------------------- input
  _aspect() {
    const img = this._image();
    if (img) return img.naturalWidth / img.naturalHeight;
    return this.defaultAspect;
  }

  _image() {
    const url = backgroundFor(this.backgrounds.wired, this.frame) ?? backgroundFor(this.backgrounds.run, this.frame);
    const img = this.images.get(url);
    return img && img.complete && img.naturalWidth > 0 ? img : null;
  }

  _frameRect() {
    return fitRect(this.canvas.clientWidth, this.canvas.clientHeight, this._aspect());
  }

  /** On-screen scale of the editor (ComfyUI's canvas zoom is a CSS transform of the widget). */
  _zoom() {
    const r = this.canvas.getBoundingClientRect();
    return this.canvas.clientWidth > 0 && r.width > 0 ? r.width / this.canvas.clientWidth : 1;
  }

  _backingSize() {
    const k = this._zoom() * (globalThis.devicePixelRatio || 1);
    return [Math.max(1, Math.round(this.canvas.clientWidth * k)), Math.max(1, Math.round(this.canvas.clientHeight * k))];
  }

  /** Pointer position in frame coordinates; CSS transforms (ComfyUI zoom) are undone via the bounding rect. */
  _point(e) {
    const r = this.canvas.getBoundingClientRect();
    const z = this._zoom();
    const f = this._frameRect();
    return {
      x: f.w > 0 ? ((e.clientX - r.left) / z - f.x) / f.w : 0,
      y: f.h > 0 ? ((e.clientY - r.top) / z - f.y) / f.h : 0,
    };
  }

  /** Hit tolerance: handlePx on screen (at least), in frame units. */
  _tolerance(px = this.handlePx) {
    const f = this._frameRect();
    const layoutPx = Math.max(px, px / this._zoom());
    return [f.w > 0 ? layoutPx / f.w : 0, f.h > 0 ? layoutPx / f.h : 0];
  }

  _hit(p) {
    const [tx, ty] = this._tolerance();
    return hitTest(this._subjects().map((s) => s.box ?? null), p.x, p.y, tx, ty, this.selected);
  }

  _pointerDown(e) {
    if (e.button !== 0) return;
    e.stopPropagation(); // no preventDefault: ComfyUI's change tracker listens for the mouseup that follows
    this.menu.close();
    this.canvas.focus();
    if (!this.layout || this.layout.frames.length === 0) return;
    const p = this._point(e);
    const hit = this._hit(p);
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

  /** The dragged box for pointer position p (snapped while Shift is held). */
  _dragged(p, shift) {
    const drag = this.drag;
    const [tx, ty] = this._tolerance(SNAP_PX);
    const targets = snapTargets(this._subjects().map((s) => s.box ?? null), drag.mode === "draw" ? -1 : this.selected);
    if (drag.mode === "draw") {
      const box = boxFromDrag(drag.start.x, drag.start.y, p.x, p.y, 0);
      return box && shift ? snapEdges(box, "nwse", targets, tx, ty, 0) : box;
    }
    if (drag.mode === "move") {
      const moved = moveBox(drag.orig, p.x - drag.start.x, p.y - drag.start.y);
      return shift ? snapMove(moved, targets, tx, ty) : moved;
    }
    const resized = resizeBox(drag.orig, drag.mode, p.x, p.y, this.minSize);
    return shift ? snapEdges(resized, drag.mode, targets, tx, ty, this.minSize) : resized;
  }

  _pointerMove(e) {
    if (!this.layout) return;
    const p = this._point(e);
    if (!this.drag) {
      this.canvas.style.cursor = cursorForHandle(this._hit(p)?.handle);
      return;
    }
    e.stopPropagation();
    this.snapping = e.shiftKey;
    const box = this._dragged(p, e.shiftKey);
    if (this.drag.mode === "draw") this.preview = box;
    else this._subjects()[this.selected].box = box;
    this._showReadout();
    this.redraw();
  }

  _pointerUp(e, cancelled) {
    const drag = this.drag;
    if (!drag || !this.layout) return;
    e.stopPropagation();
    const box = cancelled ? null : this._dragged(this._point(e), e.shiftKey);
    this.drag = null;
    this.preview = null;
    this.snapping = false;
    this.canvas.releasePointerCapture?.(e.pointerId);
    if (drag.mode === "draw") {
      if (!box || box[2] - box[0] < this.minSize || box[3] - box[1] < this.minSize) return this._refresh();
      return this._addBox(box);
    }
    const subject = this._subjects()[this.selected];
    subject.box = cancelled ? drag.orig : box;
    if (subject.box.some((v, i) => v !== drag.orig[i])) this._emit();
    else this._refresh();
  }

  _addBox(box) {
    const character = freeCharacter(this.layout, this.frame, this.preferred);
    if (character === null) return this._refresh(this._noFreeCharacter()); // never invent an id
    this._subjects().push({ character, box });
    this.selected = this._subjects().length - 1;
    this._emit();
  }

  _contextMenu(e) {
    e.preventDefault();
    e.stopPropagation();
    this.canvas.focus();
    if (!this.layout) return;
    const p = this._point(e);
    const hit = this._hit(p);
    const items = [];
    if (hit) {
      this.selected = hit.index;
      const i = hit.index;
      const subject = this._subjects()[i];
      const last = this.frame + 1 >= this.layout.frames.length;
      items.push({ label: "Delete", action: "delete", run: () => this._deleteSelected() });
      items.push({ label: "Duplicate", action: "duplicate", run: () => this._duplicate(i) });
      items.push({ label: "Copy to next frame", action: "copy-next", disabled: last, run: () => this._copyToNext(i) });
      items.push({ label: "Copy to all frames", action: "copy-all", run: () => this._copyToAll(i) });
      items.push({ label: "Full frame", action: "full-frame", run: () => this._setBox(i, [0, 0, 1, 1]) });
      const used = new Set(this._subjects().map((s) => s.character));
      for (const id of this.layout.characters) {
        if (id === subject.character) continue;
        items.push({ label: `Character: ${id}`, action: `character:${id}`, disabled: used.has(id),
          colour: colourFor(this.layout.characters, id), run: () => this._setCharacter(i, id) });
      }
    } else {
      this.selected = -1;
      items.push({ label: "Copy boxes from previous frame", action: "copy-prev", disabled: this.frame === 0,
        run: () => this._copyFromPrevious() });
      items.push({ label: "Copy this frame's boxes to all frames", action: "copy-frame-all",
        disabled: !this._subjects().length, run: () => this._copyToAll(-1) });
    }
    this._refresh();
    const r = this.root.getBoundingClientRect();
    const z = this.root.clientWidth > 0 && r.width > 0 ? r.width / this.root.clientWidth : 1;
    this.menu.open((e.clientX - r.left) / z, (e.clientY - r.top) / z, items);
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
      this.menu.close();
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
  _problems() {
    if (this.error) {
      const at = pathLocation(this.error.path);
      return [{ ...this.error, frame: at.frame, subject: at.subject }];
    }
    return storyProblems(this.layout, this.story);
  }

  _showReadout() {
    const box = this.preview ?? this._subjects()[this.selected]?.box;
    if (!box) {
      this.readout.textContent = "";
      return "";
    }
    if (this.frameSize) {
      const p = boxPixels(box, ...this.frameSize);
      this.readout.textContent = `x ${p.x} y ${p.y} w ${p.w} h ${p.h} px`;
      return `${p.w} \u00D7 ${p.h} px`;
    }
    const pc = (v) => Math.round(v * 100);
    this.readout.textContent = `x ${pc(box[0])}% y ${pc(box[1])}% w ${pc(box[2] - box[0])}% h ${pc(box[3] - box[1])}%`;
    return `${pc(box[2] - box[0])}% \u00D7 ${pc(box[3] - box[1])}%`;
  }

  _refreshStrip(problems) {
    const frames = this._frames();
    const characters = this.layout?.characters ?? [];
    const bad = new Set(problems.map((p) => p.frame));
    const chips = frames.map((frame, i) => {
      const subjects = Array.isArray(frame?.subjects) ? frame.subjects : [];
      const chip = button(`${i + 1}`, this.story?.prompts?.[i] ?? `frame ${i + 1}`, () => this.selectFrame(i));
      chip.className = "l2s-strip-frame";
      chip.dataset.frame = String(i);
      chip.style.padding = "0 4px";
      chip.style.fontSize = "11px";
      if (i === this.frame) chip.style.outline = "2px solid var(--p-primary-color, #4fc3f7)";
      if (bad.has(i)) chip.style.borderColor = ERROR_COLOUR;
      for (const s of subjects.slice(0, 6)) {
        chip.append(el("span", { textContent: "\u25A0" }, { color: colourFor(characters, s?.character), marginLeft: "1px" }));
      }
      return chip;
    });
    this.strip.replaceChildren(...chips);
  }

  _refreshPicker(subject) {
    const ok = this.layout !== null;
    const used = new Set(this._subjects().map((s) => s.character));
    this.pickerLabel.textContent = subject ? "box:" : "next box:";
    this.characterSelect.title = subject ? "Character of the selected box" : "Character the next box you draw gets";
    this.characterSelect.replaceChildren();
    for (const id of ok ? this.layout.characters : []) {
      const taken = used.has(id) && id !== subject?.character;
      this.characterSelect.append(el("option", { value: id, disabled: taken,
        textContent: taken ? `${id} (has a box here)` : id }));
    }
    let value = subject?.character ?? null;
    if (ok && !subject) {
      value = freeCharacter(this.layout, this.frame, this.preferred);
      if (value === null) {
        this.characterSelect.append(el("option", { value: "", disabled: true, textContent: "(every character has a box)" }));
        value = "";
      }
    }
    if (ok && !this.story) this.characterSelect.append(el("option", { value: NEW_CHARACTER, textContent: "+ new character\u2026" }));
    this.characterSelect.value = value ?? "";
    this.characterSelect.disabled = !ok;
    this.newCharacterInput.style.display = "none";
  }

  _refresh(status = "") {
    const ok = this.layout !== null;
    const n = this._frames().length;
    this.frameLabel.textContent = n ? `frame ${this.frame + 1} / ${n}` : ok ? "no frames" : "frame - / -";
    this.prevButton.disabled = this.frame <= 0;
    this.nextButton.disabled = this.frame >= n - 1;
    this.addFrameButton.disabled = !ok;
    this.removeFrameButton.disabled = !ok || n <= 1;
    this.copyPrevButton.disabled = !ok || this.frame === 0;
    this.copyAllButton.disabled = !ok || !this._subjects().length;
    const prompt = this.story?.prompts?.[this.frame];
    this.promptLine.textContent = !this.story ? "" : prompt ? `\u201C${prompt}\u201D` : `(past the story's ${this.story.prompts?.length ?? 0} frames)`;
    this.promptLine.title = this.promptLine.textContent;
    this.promptLine.style.display = this.story ? "" : "none";
    const subject = this._subjects()[this.selected];
    this._refreshPicker(subject);
    if (document.activeElement !== this.captionInput || !subject) this.captionInput.value = subject?.caption ?? "";
    this.captionInput.disabled = !subject;
    this.captionInput.placeholder = subject ? `caption of ${subject.character} here (optional)` : "select a box to caption it";
    this.captionInput.title = subject?.caption ?? "How the character looks in this frame; empty = the frame's prompt";
    this.deleteButton.disabled = !subject;
    this._showReadout();
    const problems = this._problems();
    this._refreshStrip(problems);
    const first = problems[0];
    this.status.textContent = first ? `Layout error in ${humanPath(first.path)}: ${first.detail}` : status;
    this.status.style.color = first ? "#ff6b6b" : "";
    this.status.title = this.status.textContent;
    this.root.dataset.state = first ? "error" : "ok";
    this.redraw();
  }

  redraw() {
    const c = this.canvas;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!(w > 0 && h > 0)) return;
    const [bw, bh] = this._backingSize();
    if (c.width !== bw || c.height !== bh) {
      c.width = bw;
      c.height = bh;
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(bw / w, 0, 0, bh / h, 0, 0);
    const f = this._frameRect();
    const problems = this._problems().filter((p) => p.frame === this.frame);
    const bad = new Set(problems.map((p) => p.subject).filter((k) => k >= 0));
    const subjects = this.layout ? this._subjects() : this._rawSubjects();
    const characters = this.layout?.characters ?? [...new Set(subjects.map((s) => s.character))];
    drawFrame(ctx, w, h, {
      f, image: this._image(), snapping: this.snapping, subjects, characters, bad, selected: this.selected,
      ghost: this.layout && this.frame > 0 ? this.layout.frames[this.frame - 1].subjects : [],
      preview: this.preview, dragLabel: this.drag ? this._showReadout() : "", handlePx: this.handlePx,
    });
    if (!this.layout && !subjects.length) return centerText(ctx, f, "layout JSON has an error (see below); the text is kept as is");
    if (!this.layout) return;
    if (this.layout.frames.length === 0) return centerText(ctx, f, "no frames: press + frame");
    if (this._subjects().length === 0 && !this.preview) centerText(ctx, f, "drag to draw a box");
    const boxless = this._subjects().filter((s) => !s.box).map((s) => s.character);
    if (boxless.length) {
      ctx.fillStyle = "#aaa";
      ctx.fillText(`whole frame: ${boxless.join(", ")}`, f.x + 4, f.y + f.h - 16);
    }
  }

  /** The bad text's subjects of this frame that can be drawn (4 finite numbers, put in order), for the red mark. */
  _rawSubjects() {
    const subjects = this.raw?.frames?.[this.frame]?.subjects;
    if (!Array.isArray(subjects)) return [];
    return subjects.map((s) => {
      const b = s?.box;
      const drawable = Array.isArray(b) && b.length === 4 && b.every((v) => typeof v === "number" && Number.isFinite(v));
      const box = drawable ? [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])]
        .map((v) => clamp(v, 0, 1)) : null;
      const character = typeof s?.character === "string" ? s.character : "?";
      return { character, box: box && box[2] > box[0] && box[3] > box[1] ? box : null };
    });
  }
}
