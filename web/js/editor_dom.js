// Lay2Story box editor: its DOM (toolbar, frame prompt, frame strip, canvas, picker, caption, readout, dialogue
// lines, hint, JSON view, status line) and the refresh of everything but the canvas after each change. Functions of
// the editor (`ed`, a BoxCanvasEditor); box_canvas.js owns the state and the input handling. Every row but the
// canvas keeps its height whatever it shows (the status line reserves two lines, the dialogue list scrolls), so a
// message or a page turn never resizes the canvas under the mouse.

import { freeCharacter, humanPath } from "./layout_state.js";
import { ERROR_COLOUR, colourFor } from "./canvas_draw.js";
import { buildDialogue, refreshDialogue } from "./editor_dialogue.js";

export const NEW_CHARACTER = "\u0000new";
export const GESTURE_HINT = "drag: draw \u00B7 drag a box: move \u00B7 edge: resize \u00B7 Shift: snap \u00B7 " +
  "right-click: menu \u00B7 PgUp/PgDn: frame \u00B7 Del: delete";
export const STATUS_LINES = 2;
const STATUS_LINE_PX = 14;

export function el(tag, props = {}, style = {}) {
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

/** Builds the editor's elements into `container` and wires their events to the editor's methods. */
export function buildEditor(ed, container) {
  const row = { display: "flex", gap: "4px", alignItems: "center", flexWrap: "nowrap", minWidth: "0" };
  const small = { fontSize: "11px", color: "var(--descrip-text, #999)", overflow: "hidden", textOverflow: "ellipsis",
    whiteSpace: "nowrap" };
  ed.root = el("div", { className: "l2s-box-editor", tabIndex: -1 }, {
    display: "flex", flexDirection: "column", gap: "3px", width: "100%", height: "100%", boxSizing: "border-box",
    font: "12px sans-serif", color: "var(--input-text, #ddd)", outline: "none", userSelect: "none",
    position: "relative", overflow: "hidden",
  });
  const nav = el("div", { className: "l2s-nav" }, { ...row, overflow: "hidden" });
  ed.prevButton = button("\u25C0", "Previous frame (PgUp)", () => ed.selectFrame(ed.frame - 1));
  ed.frameLabel = el("span", { className: "l2s-frame-label" }, { minWidth: "74px", textAlign: "center", flex: "none" });
  ed.nextButton = button("\u25B6", "Next frame (PgDn)", () => ed.selectFrame(ed.frame + 1));
  ed.addFrameButton = button("+ frame", "Add an empty frame after this one", () => ed._addFrame());
  ed.removeFrameButton = button("\u2212 frame", "Remove this frame", () => ed._removeFrame());
  ed.copyPrevButton = button("\u21E4 copy prev", "Copy the previous frame's boxes into this frame", () => ed._copyFromPrevious());
  ed.copyAllButton = button("copy to all", "Copy this frame's boxes to every other frame", () => ed._copyToAll(-1));
  ed.jsonButton = button("{ }", "Show / hide the layout JSON", () => ed._toggleJson());
  nav.append(ed.prevButton, ed.frameLabel, ed.nextButton, ed.addFrameButton, ed.removeFrameButton,
    ed.copyPrevButton, ed.copyAllButton, el("span", {}, { flex: "1" }), ed.jsonButton);
  ed.promptLine = el("div", { className: "l2s-frame-prompt" }, { ...small, fontSize: "12px", color: "var(--input-text, #ddd)", minHeight: "15px" });
  ed.strip = el("div", { className: "l2s-strip" }, { ...row, overflowX: "auto", overflowY: "hidden", minHeight: "20px" });

  ed.canvasWrap = el("div", { className: "l2s-canvas-wrap" }, { flex: "1", minHeight: "160px", position: "relative" });
  ed.canvas = el("canvas", { className: "l2s-canvas", tabIndex: 0 }, {
    position: "absolute", inset: "0", width: "100%", height: "100%", outline: "none", cursor: "crosshair",
    touchAction: "none",
  });
  ed.canvasWrap.append(ed.canvas);

  const props = el("div", { className: "l2s-props" }, row);
  ed.pickerLabel = el("span", { className: "l2s-picker-label" }, { flex: "none" });
  ed.characterSelect = el("select", { className: "l2s-character" }, { flex: "none", maxWidth: "40%" });
  ed.newCharacterInput = el("input", { className: "l2s-new-character", placeholder: "new character id" },
    { display: "none", width: "110px", flex: "none" });
  ed.captionInput = el("input", { className: "l2s-caption" }, { flex: "1", minWidth: "60px" });
  ed.readout = el("span", { className: "l2s-readout", title: "Position and size of the selected box" },
    { ...small, flex: "none", fontFamily: "monospace" });
  ed.deleteButton = button("\u2715", "Delete the selected box (Delete / Backspace)", () => ed._deleteSelected());
  props.append(ed.pickerLabel, ed.characterSelect, ed.newCharacterInput, ed.captionInput, ed.readout,
    ed.deleteButton);
  buildDialogue(ed, button);
  // The hint wraps (never cut at a narrow node) and the status line keeps room for two lines, empty or not.
  ed.hint = el("div", { className: "l2s-hint", textContent: GESTURE_HINT, title: GESTURE_HINT },
    { ...small, whiteSpace: "normal", textOverflow: "clip", flex: "none", lineHeight: "13px" });

  ed.jsonArea = el("textarea", { className: "l2s-json", spellcheck: false },
    { display: "none", height: "160px", minHeight: "60px", resize: "vertical", font: "11px monospace", flex: "none",
      whiteSpace: "pre", overflow: "auto" });
  ed.status = el("div", { className: "l2s-status" }, { height: `${STATUS_LINES * STATUS_LINE_PX}px`,
    lineHeight: `${STATUS_LINE_PX}px`, whiteSpace: "normal", overflowWrap: "anywhere", overflowY: "auto",
    flex: "none", userSelect: "text", boxSizing: "border-box" });
  ed.root.append(nav, ed.promptLine, ed.strip, ed.canvasWrap, props, ed.dialoguePanel, ed.hint, ed.jsonArea,
    ed.status);
  container.append(ed.root);

  ed.canvas.addEventListener("pointerdown", (e) => ed._pointerDown(e));
  ed.canvas.addEventListener("pointermove", (e) => ed._pointerMove(e));
  ed.canvas.addEventListener("pointerup", (e) => ed._pointerUp(e, false));
  ed.canvas.addEventListener("pointercancel", (e) => ed._pointerUp(e, true));
  ed.canvas.addEventListener("contextmenu", (e) => ed._contextMenu(e));
  ed.root.addEventListener("keydown", (e) => ed._keyDown(e));
  ed.characterSelect.addEventListener("change", () => ed._pickCharacter(ed.characterSelect.value));
  ed.newCharacterInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") ed._addCharacter(ed.newCharacterInput.value);
    if (e.key === "Escape") ed._refresh();
  });
  ed.newCharacterInput.addEventListener("blur", () => {
    if (ed.newCharacterInput.style.display !== "none" && ed.newCharacterInput.value.trim()) {
      ed._addCharacter(ed.newCharacterInput.value);
    }
  });
  ed.captionInput.addEventListener("input", () => ed._setCaption(ed.captionInput.value));
  ed.jsonArea.addEventListener("input", () => ed._jsonTyped(ed.jsonArea.value));
}


/** The frame strip: one chip per frame with a square per box, the current one outlined, bad ones red. */
export function refreshStrip(ed, problems) {
  const frames = ed._frames();
  const characters = ed.layout?.characters ?? [];
  const bad = new Set(problems.map((p) => p.frame));
  const chips = frames.map((frame, i) => {
    const subjects = Array.isArray(frame?.subjects) ? frame.subjects : [];
    const chip = button(`${i + 1}`, ed.story?.prompts?.[i] ?? `frame ${i + 1}`, () => ed.selectFrame(i));
    chip.className = "l2s-strip-frame";
    chip.dataset.frame = String(i);
    chip.style.padding = "0 4px";
    chip.style.fontSize = "11px";
    if (i === ed.frame) chip.style.outline = "2px solid var(--p-primary-color, #4fc3f7)";
    if (bad.has(i)) chip.style.borderColor = ERROR_COLOUR;
    for (const s of subjects.slice(0, 6)) {
      chip.append(el("span", { textContent: "\u25A0" }, { color: colourFor(characters, s?.character), marginLeft: "1px" }));
    }
    return chip;
  });
  ed.strip.replaceChildren(...chips);
}


/** The character picker: "box:" for the selected box, "next box:" for the one to be drawn. */
export function refreshPicker(ed, subject) {
  const ok = ed.layout !== null;
  const used = new Set(ed._subjects().map((s) => s.character));
  ed.pickerLabel.textContent = subject ? "box:" : "next box:";
  ed.characterSelect.title = subject ? "Character of the selected box" : "Character the next box you draw gets";
  ed.characterSelect.replaceChildren();
  for (const id of ok ? ed.layout.characters : []) {
    const taken = used.has(id) && id !== subject?.character;
    ed.characterSelect.append(el("option", { value: id, disabled: taken,
      textContent: taken ? `${id} (has a box here)` : id }));
  }
  let value = subject?.character ?? null;
  if (ok && !subject) {
    value = freeCharacter(ed.layout, ed.frame, ed.preferred);
    if (value === null) {
      ed.characterSelect.append(el("option", { value: "", disabled: true, textContent: "(every character has a box)" }));
      value = "";
    }
  }
  if (ok && !ed.story) ed.characterSelect.append(el("option", { value: NEW_CHARACTER, textContent: "+ new character\u2026" }));
  ed.characterSelect.value = value ?? "";
  ed.characterSelect.disabled = !ok;
  ed.newCharacterInput.style.display = "none";
}


/** Everything but the canvas, after a change; `status` is the line shown when there is no error. */
export function refreshPanel(ed, status = "") {
  const ok = ed.layout !== null;
  const n = ed._frames().length;
  ed.frameLabel.textContent = n ? `frame ${ed.frame + 1} / ${n}` : ok ? "no frames" : "frame - / -";
  ed.prevButton.disabled = ed.frame <= 0;
  ed.nextButton.disabled = ed.frame >= n - 1;
  ed.addFrameButton.disabled = !ok;
  ed.removeFrameButton.disabled = !ok || n <= 1;
  ed.copyPrevButton.disabled = !ok || ed.frame === 0;
  ed.copyAllButton.disabled = !ok || !ed._subjects().length;
  const prompt = ed.story?.prompts?.[ed.frame];
  ed.promptLine.textContent = !ed.story ? "" : prompt ? `\u201C${prompt}\u201D` : `(past the story's ${ed.story.prompts?.length ?? 0} frames)`;
  ed.promptLine.title = ed.promptLine.textContent;
  ed.promptLine.style.display = ed.story ? "" : "none";
  const subject = ed._subjects()[ed.selected];
  refreshPicker(ed, subject);
  if (document.activeElement !== ed.captionInput || !subject) ed.captionInput.value = subject?.caption ?? "";
  ed.captionInput.disabled = !subject;
  ed.captionInput.placeholder = subject ? `caption of ${subject.character} here (optional)` : "select a box to caption it";
  ed.captionInput.title = subject?.caption ?? "How the character looks in this frame; empty = the frame's prompt";
  ed.deleteButton.disabled = !subject;
  ed._showReadout();
  const problems = ed._problems();
  refreshStrip(ed, problems);
  refreshDialogue(ed, problems);
  const first = problems[0];
  ed.status.textContent = first ? `Layout error in ${humanPath(first.path)}: ${first.detail}` : status;
  ed.status.style.color = first ? "#ff6b6b" : "";
  ed.status.title = ed.status.textContent;
  ed.root.dataset.state = first ? "error" : "ok";
  ed.redraw();
}

