// Lay2Story layout editor: the current frame's dialogue lines (a panel under the box properties). Each line has a
// speaker (a story character or narration), a style (speech / thought / shout / caption box), its text and a delete
// button; "+ line" adds one, "story's lines" drops the frame's own lines again. Functions of the editor (`ed`, a
// BoxCanvasEditor), which owns the layout and writes it (`ed._emit`) after each edit; dialogue_state.js has the pure
// edits. The panel keeps a fixed height (it scrolls), so paging frames with more or fewer lines never moves the
// canvas.

import {
  DIALOGUE_STYLES,
  STYLE_LABELS,
  addLine,
  deleteLine,
  frameDialogue,
  setLine,
  useStoryDialogue,
} from "./dialogue_state.js";
import { MAX_CAPTION_CHARS } from "./layout_schema.js";

export const NARRATION = ""; // the speaker select's value for narration (no speaker)
const ROW_PX = 24;
const VISIBLE_ROWS = 3;

function el(tag, props = {}, style = {}) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  Object.assign(node.style, style);
  return node;
}

function editable(ed) {
  return ed.layout !== null && Boolean(ed.layout.frames[ed.frame]);
}

/** A new line in this frame, said by the selected box's character (else narration), its text ready to type. */
export function addDialogueLine(ed) {
  if (!editable(ed)) return;
  const k = addLine(ed.layout, ed.story, ed.frame, ed._subjects()[ed.selected]?.character ?? null);
  ed._emit(`added line ${k + 1} to frame ${ed.frame + 1}: type what is said`);
  const input = ed.dialogueList.querySelectorAll(".l2s-line-text")[k];
  input?.focus();
  input?.select();
}

/** Changes line k of this frame ({text?, speaker?, style?}); an emptied text is not written (the schema refuses it). */
export function setDialogueLine(ed, k, patch) {
  if (!editable(ed)) return;
  if (!setLine(ed.layout, ed.story, ed.frame, k, patch)) {
    return ed._refresh(`line ${k + 1} needs some text (delete the line with \u2715 instead)`);
  }
  ed._emit();
}

export function deleteDialogueLine(ed, k) {
  if (editable(ed) && deleteLine(ed.layout, ed.story, ed.frame, k)) {
    ed._emit(`deleted line ${k + 1} of frame ${ed.frame + 1}`);
  }
}

export function useStoryLines(ed) {
  if (editable(ed) && useStoryDialogue(ed.layout, ed.frame)) ed._emit(`frame ${ed.frame + 1} uses the story's lines again`);
}

/** Builds the panel into ed.dialoguePanel (the caller places it) and wires it to the editor's line methods. */
export function buildDialogue(ed, button) {
  const small = { fontSize: "11px", color: "var(--descrip-text, #999)", whiteSpace: "nowrap", overflow: "hidden",
    textOverflow: "ellipsis" };
  ed.dialoguePanel = el("div", { className: "l2s-dialogue" }, { display: "flex", flexDirection: "column", gap: "2px",
    flex: "none" });
  const head = el("div", {}, { display: "flex", gap: "4px", alignItems: "center", minWidth: "0" });
  ed.dialogueLabel = el("span", { className: "l2s-dialogue-label" }, { ...small, flex: "1", minWidth: "0" });
  ed.addLineButton = button("+ line", "Add a dialogue line to this frame (lettered on the comic page)",
    () => addDialogueLine(ed));
  ed.addLineButton.classList.add("l2s-dialogue-add");
  ed.storyLinesButton = button("story's lines", "Drop this frame's own lines: the story's lines for it are used",
    () => useStoryLines(ed));
  ed.storyLinesButton.classList.add("l2s-dialogue-reset");
  head.append(ed.dialogueLabel, ed.storyLinesButton, ed.addLineButton);
  ed.dialogueList = el("div", { className: "l2s-dialogue-lines" }, {
    height: `${ROW_PX * VISIBLE_ROWS}px`, overflowY: "auto", overflowX: "hidden", display: "flex",
    flexDirection: "column", gap: "2px", boxSizing: "border-box",
  });
  ed.dialoguePanel.append(head, ed.dialogueList);
  ed.dialogueKey = null;
}

function lineRow(ed, k, characters) {
  const control = { font: "inherit", flex: "none", height: `${ROW_PX - 4}px`, boxSizing: "border-box" };
  const row = el("div", { className: "l2s-line" }, { display: "flex", gap: "4px", alignItems: "center",
    minHeight: `${ROW_PX - 2}px`, minWidth: "0" });
  row.dataset.line = String(k);
  const speaker = el("select", { className: "l2s-line-speaker", title: "Who says it (narration: nobody)" },
    { ...control, maxWidth: "28%" });
  speaker.append(el("option", { value: NARRATION, textContent: "(narration)" }));
  for (const id of characters) speaker.append(el("option", { value: id, textContent: id }));
  const style = el("select", { className: "l2s-line-style", title: "How it is lettered" }, control);
  for (const s of DIALOGUE_STYLES) style.append(el("option", { value: s, textContent: STYLE_LABELS[s] }));
  const text = el("input", { className: "l2s-line-text", maxLength: MAX_CAPTION_CHARS, placeholder: "what is said" },
    { ...control, flex: "1", minWidth: "60px" });
  const remove = el("button", { type: "button", className: "l2s-line-delete", textContent: "\u2715",
    title: "Delete this line" }, { ...control, padding: "0 5px", cursor: "pointer", font: "inherit",
    border: "1px solid var(--border-color, #555)", background: "var(--comfy-input-bg, #222)",
    color: "var(--input-text, #ddd)", borderRadius: "4px" });
  speaker.addEventListener("change", () => setDialogueLine(ed, k, { speaker: speaker.value === NARRATION ? null : speaker.value }));
  style.addEventListener("change", () => setDialogueLine(ed, k, { style: style.value }));
  text.addEventListener("input", () => setDialogueLine(ed, k, { text: text.value }));
  text.addEventListener("blur", () => ed._refresh()); // an emptied text that was refused shows the kept text again
  remove.addEventListener("click", (e) => {
    e.stopPropagation();
    deleteDialogueLine(ed, k);
  });
  row.append(speaker, style, text, remove);
  return row;
}

function fill(row, line, problem) {
  const [speaker, style, text] = row.children;
  const who = line.speaker ?? NARRATION;
  if (who !== NARRATION && ![...speaker.options].some((o) => o.value === who)) {
    speaker.append(el("option", { value: who, textContent: `${who} (not in the story)` }));
  }
  if (document.activeElement !== speaker) speaker.value = who;
  if (document.activeElement !== style) style.value = line.style;
  if (document.activeElement !== text) text.value = line.text;
  text.title = line.text;
  row.style.outline = problem ? "1px solid #ff6b6b" : "";
  row.title = problem ? problem.detail : "";
}

/** Shows frame ed.frame's lines; rows are rebuilt only when their number or the characters change (typing keeps
 * its focus and caret). `problems` are the editor's (a bad line is outlined in red). */
export function refreshDialogue(ed, problems = []) {
  const ok = ed.layout !== null;
  const { lines, fromStory } = ok ? frameDialogue(ed.layout, ed.story, ed.frame) : { lines: [], fromStory: false };
  const characters = ok ? ed.layout.characters : [];
  const n = lines.length;
  const source = !ok ? "" : fromStory ? (n ? " (the story's)" : "") : ed.story ? " (replace the story's)" : "";
  ed.dialogueLabel.textContent = ok ? `dialogue, frame ${ed.frame + 1}: ${n} line${n === 1 ? "" : "s"}${source}` : "dialogue";
  ed.dialogueLabel.title = ed.dialogueLabel.textContent;
  ed.addLineButton.disabled = !ok || ed._frames().length === 0;
  ed.storyLinesButton.disabled = !ok || fromStory;
  ed.storyLinesButton.style.display = ok && !fromStory ? "" : "none";
  const key = JSON.stringify([ed.frame, n, characters, ok]);
  if (key !== ed.dialogueKey) {
    ed.dialogueKey = key;
    ed.dialogueList.replaceChildren(...lines.map((_, k) => lineRow(ed, k, characters)));
    if (!n) {
      ed.dialogueList.append(el("div", { className: "l2s-dialogue-empty", textContent: ok ? "no lines: + line adds one" : "" },
        { fontSize: "11px", color: "var(--descrip-text, #999)" }));
    }
  }
  const bad = new Map(problems.filter((p) => p.frame === ed.frame && p.line >= 0).map((p) => [p.line, p]));
  [...ed.dialogueList.querySelectorAll(".l2s-line")].forEach((row, k) => {
    if (lines[k]) fill(row, lines[k], bad.get(k));
  });
}
