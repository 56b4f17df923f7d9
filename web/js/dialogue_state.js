// Lay2Story layout editor: the pure functions of a frame's dialogue lines (no DOM; unit-tested with
// `node --test tests/web/box_canvas.test.mjs`). A layout frame with a `dialogue` list owns its lines (they replace
// the story's when the node runs); a frame without one shows the connected story's lines, and the first edit copies
// them into the frame. Lines are {text, speaker?, style} as in the Python schema (speaker absent = narration).

import { DIALOGUE_STYLES, MAX_CAPTION_CHARS, defaultStyle } from "./layout_schema.js";

export { DIALOGUE_STYLES, defaultStyle };
export const NEW_LINE_TEXT = "\u2026"; // what a new line says until it is typed over (a line may not be empty)
export const STYLE_LABELS = { speech: "speech", thought: "thought", shout: "shout", caption: "caption box" };

function copyLine(line) {
  const out = { text: String(line?.text ?? "") };
  if (line?.speaker !== undefined && line?.speaker !== null) out.speaker = String(line.speaker);
  out.style = DIALOGUE_STYLES.includes(line?.style) ? line.style : defaultStyle(out.speaker);
  return out;
}

/**
 * Frame f's lines as the editor shows them: {lines, fromStory}. The layout's own lines when the frame has a
 * `dialogue` key, else the story's lines for that frame (read-only copies; `fromStory` true).
 */
export function frameDialogue(layout, story, f) {
  const frame = layout?.frames?.[f];
  if (Array.isArray(frame?.dialogue)) return { lines: frame.dialogue, fromStory: false };
  const lines = story?.dialogue?.[f];
  return { lines: Array.isArray(lines) ? lines.map(copyLine) : [], fromStory: true };
}

/** Frame f's own line list, created from the story's lines on first use (so an edit keeps the other lines). */
export function ownDialogue(layout, story, f) {
  const frame = layout.frames[f];
  if (!Array.isArray(frame.dialogue)) frame.dialogue = frameDialogue(layout, story, f).lines.map(copyLine);
  return frame.dialogue;
}

/** Appends a line said by `speaker` (null = narration); returns its index. */
export function addLine(layout, story, f, speaker = null, text = NEW_LINE_TEXT) {
  const lines = ownDialogue(layout, story, f);
  lines.push(copyLine({ text, speaker }));
  return lines.length - 1;
}

/**
 * Changes line k of frame f: {text?, speaker?, style?}. A new speaker whose line kept the old speaker's default
 * style gets the new one's default (a hero's speech turned narration becomes a caption box). Text is cut to the
 * schema's limit; empty text is refused (returns false: the caller says why), as the schema refuses it.
 */
export function setLine(layout, story, f, k, patch) {
  const lines = ownDialogue(layout, story, f);
  const line = lines[k];
  if (!line) return false;
  if ("text" in patch) {
    const text = String(patch.text ?? "");
    if (!text.trim()) return false;
    line.text = text.slice(0, MAX_CAPTION_CHARS);
  }
  if ("speaker" in patch) {
    const speaker = patch.speaker === null || patch.speaker === "" ? undefined : String(patch.speaker);
    const keptDefault = line.style === defaultStyle(line.speaker);
    if (speaker === undefined) delete line.speaker;
    else line.speaker = speaker;
    if (keptDefault && !("style" in patch)) line.style = defaultStyle(line.speaker);
  }
  if ("style" in patch && DIALOGUE_STYLES.includes(patch.style)) line.style = patch.style;
  return true;
}

/** Deletes line k of frame f (the frame then owns its lines, even when none are left). */
export function deleteLine(layout, story, f, k) {
  const lines = ownDialogue(layout, story, f);
  if (k < 0 || k >= lines.length) return false;
  lines.splice(k, 1);
  return true;
}

/** Frame f goes back to the story's lines (its `dialogue` key is dropped); true when it had its own. */
export function useStoryDialogue(layout, f) {
  const frame = layout.frames[f];
  if (!frame || !("dialogue" in frame)) return false;
  delete frame.dialogue;
  return true;
}

/** Every speaker id the layout's lines use (they must stay in the picker's list, like the boxes' characters). */
export function dialogueSpeakers(layout) {
  const ids = new Set();
  for (const frame of layout?.frames ?? []) {
    for (const line of frame?.dialogue ?? []) if (typeof line?.speaker === "string") ids.add(line.speaker);
  }
  return [...ids];
}
