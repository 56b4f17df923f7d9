// Lay2Story box editor: a reusable canvas widget for per-frame subject boxes (ES module, no build step, no
// dependencies, no ComfyUI import; web/js/lay2story.js wires it into ComfyUI). The pure layout-state functions
// live in layout_state.js (re-exported here); this module is the DOM editor built on them (it touches
// `document` only when constructed).

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
  layoutToText,
  freeCharacter,
  newCharacterId,
  backgroundFor,
  fitRect,
} from "./layout_state.js";

export * from "./layout_state.js";


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
