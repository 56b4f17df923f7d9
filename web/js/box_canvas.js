// Lay2Story box editor: a reusable canvas widget for per-frame subject boxes (ES module, no build step, no
// dependencies, no ComfyUI import; web/js/lay2story.js wires it into ComfyUI). The pure layout functions live in
// layout_state.js / layout_schema.js (re-exported here), the drawing in canvas_draw.js, the DOM in editor_dom.js and
// the right-click menu in editor_menu.js; this module is the editor's state, its edits and its input handling.

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
  copySummary,
  offsetBox,
  pruneCharacters,
  fitFrames,
  boxPixels,
  storyProblems,
  pathLocation,
} from "./layout_state.js";
import { drawFrame, centerText, colourFor } from "./canvas_draw.js";
import { EditorMenu } from "./editor_menu.js";
import { NEW_CHARACTER, buildEditor, refreshPanel } from "./editor_dom.js";

export * from "./layout_state.js";
export { GESTURE_HINT } from "./editor_dom.js";

const NUDGE = 0.01;
const SNAP_PX = 8;

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
    buildEditor(this, container);
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

  // Copies never replace a box: a character already boxed in the target frame keeps its box there, and the status
  // line says what was copied and what was kept. Each copy is one change of the JSON widget (ComfyUI's undo).
  _copy(from, to, index = -1) {
    const report = copyBoxes(this.layout, from, to, index);
    const summary = copySummary(report);
    if (!report.copied.length) return this._refresh(summary);
    return this._emit(summary);
  }

  _copyFromPrevious() {
    if (!this.layout || this.frame === 0) return this._refresh("frame 1 has no previous frame");
    if (!this.layout.frames[this.frame - 1].subjects.length) return this._refresh(`frame ${this.frame} has no boxes`);
    this.selected = -1;
    this._copy(this.frame - 1, [this.frame]);
  }

  /** Copies the frame's boxes (or box `index`) to every other frame. */
  _copyToAll(index) {
    if (!this.layout || (index < 0 && !this._subjects().length)) return this._refresh("this frame has no boxes");
    this._copy(this.frame, this.layout.frames.map((_, f) => f), index);
  }

  _copyToNext(index) {
    if (!this.layout) return;
    if (this.frame + 1 >= this.layout.frames.length) return this._refresh("this is the last frame");
    this._copy(this.frame, [this.frame + 1], index);
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
    const more = this.story ? "add a character to the story (a Lay2Story Character in its cast) for another box"
      : "add a character (+ new character\u2026)";
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
      const hit = this._hit(p);
      this.canvas.style.cursor = cursorForHandle(hit?.handle);
      const s = hit ? this._subjects()[hit.index] : null; // the full caption on hover (labels are cut to the box)
      this.canvas.title = s ? (s.caption ? `${s.character}: ${s.caption}` : s.character) : "";
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

  _refresh(status = "") {
    refreshPanel(this, status);
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
