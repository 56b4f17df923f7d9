// Lay2Story layout schema in the browser: parsing and checking layout JSON text exactly where the Python schema
// (lay2story_core.story: Layout.from_json, Story.apply_layout) would refuse it, with the same field paths and the
// same wording, so the editor never shows "ok" for text the node refuses. Both sides are tested against one set of
// cases (tests/web/layout_json_cases.json). No DOM; re-exported by layout_state.js.

export const LAYOUT_VERSION = 2; // version 2 added per-frame dialogue lines; version-1 layouts read unchanged
export const SUPPORTED_VERSIONS = [1, 2];
export const DIALOGUE_VERSION = 2;
export const DIALOGUE_STYLES = ["speech", "thought", "shout", "caption"];
export const MAX_CAPTION_CHARS = 1000;
export const MAX_ID_CHARS = 128;
export const MAX_FRAMES = 256;
export const BOX_EPSILON = 1e-3;
export const JSON_PATH = "<json>";

/** An error in layout text, naming the field path like the Python LayoutError ("layout.frames[2].subjects[0].box"). */
export class LayoutTextError extends Error {
  constructor(path, detail) {
    super(`${path}: ${detail}`);
    this.name = "LayoutTextError";
    this.path = path;
    this.detail = detail;
  }
}

/** A string as Python's repr() writes it (enough for ids and keys: single quotes unless the text has one). */
export function pyRepr(value) {
  if (typeof value !== "string") return JSON.stringify(value) ?? String(value);
  const quote = value.includes("'") && !value.includes('"') ? '"' : "'";
  const body = value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r")
    .replace(new RegExp(quote, "g"), `\\${quote}`);
  return `${quote}${body}${quote}`;
}

/** A JSON number as Python's repr(float(x)) writes it (1 -> "1.0"). */
export function pyFloat(v) {
  if (Number.isInteger(v) && Math.abs(v) < 1e16) return `${v}.0`;
  return String(v);
}

function describe(value) {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * The first key that appears twice in one object of (valid) JSON text, or null. JSON.parse keeps the last value
 * silently; Python's strict parser refuses the text, so the editor must too.
 */
export function findDuplicateKey(text) {
  const stack = []; // {keys: Set, expectKey: bool} for objects, null for arrays
  let i = 0;
  const n = text.length;
  while (i < n) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < n && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1));
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (ch === "{") stack.push({ keys: new Set(), expectKey: true });
    else if (ch === "[") stack.push(null);
    else if (ch === "}" || ch === "]") stack.pop();
    else if (ch === "," && stack[stack.length - 1]) stack[stack.length - 1].expectKey = true;
    i += 1;
  }
  return null;
}

/** JSON text -> value, with Python's rules: syntax errors and duplicate keys are errors at "<json>". */
export function parseJsonStrict(text) {
  if (typeof text !== "string") throw new LayoutTextError(JSON_PATH, `expected JSON text (str), got ${describe(text)}`);
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    const detail = text.trim() ? err.message.replace(/^JSON\.parse: /, "") : "the text is empty";
    throw new LayoutTextError(JSON_PATH, `invalid JSON (${detail})`);
  }
  const duplicate = findDuplicateKey(text);
  if (duplicate !== null) throw new LayoutTextError(JSON_PATH, `duplicate key ${pyRepr(duplicate)} in one object`);
  return data;
}

/** Text fields (ids, captions): a string of valid Unicode (no lone surrogate), with the Python limits. */
function checkText(value, path, { maxChars = null, allowEmpty = false } = {}) {
  if (typeof value !== "string") throw new LayoutTextError(path, `expected a string, got ${describe(value)}`);
  if (typeof value.isWellFormed === "function" && !value.isWellFormed()) {
    throw new LayoutTextError(path, "not valid Unicode text (a lone surrogate)");
  }
  if (!allowEmpty && !value.trim()) throw new LayoutTextError(path, `must not be empty, got ${pyRepr(value)}`);
  if (maxChars !== null && value.length > maxChars) {
    throw new LayoutTextError(path, `is ${value.length} characters, over the limit of ${maxChars}`);
  }
}

export function checkId(value, path) {
  checkText(value, path, { maxChars: MAX_ID_CHARS });
  if (value !== value.trim()) throw new LayoutTextError(path, `must not start or end with whitespace, got ${pyRepr(value)}`);
}

export function checkBox(box, path) {
  if (!Array.isArray(box)) throw new LayoutTextError(path, `expected a list of 4 numbers [x0, y0, x1, y1], got ${describe(box)}`);
  if (box.length !== 4) throw new LayoutTextError(path, `expected 4 numbers [x0, y0, x1, y1], got ${box.length}: ${describe(box)}`);
  const names = ["x0", "y0", "x1", "y1"];
  const v = box.map((raw, i) => {
    if (typeof raw !== "number") throw new LayoutTextError(path, `${names[i]} is not a number: ${describe(raw)}`);
    if (!Number.isFinite(raw)) throw new LayoutTextError(path, `${names[i]} must be finite, got ${raw}`);
    if (raw < -BOX_EPSILON || raw > 1 + BOX_EPSILON) throw new LayoutTextError(path, `${names[i]} ${pyFloat(raw)} is outside [0, 1]`);
    return Math.min(Math.max(raw, 0), 1);
  });
  for (const [lo, hi, what] of [[0, 2, "width"], [1, 3, "height"]]) {
    if (v[hi] < v[lo]) throw new LayoutTextError(path, `${names[hi]} ${pyFloat(v[hi])} < ${names[lo]} ${pyFloat(v[lo])}`);
    if (v[hi] === v[lo]) throw new LayoutTextError(path, `${names[hi]} ${pyFloat(v[hi])} == ${names[lo]} ${pyFloat(v[lo])} (zero ${what})`);
  }
  return v;
}

function checkKeys(obj, path, required, optional) {
  const allowed = [...required, ...optional];
  const unknown = Object.keys(obj).filter((k) => !allowed.includes(k));
  if (unknown.length) {
    const names = unknown.map(pyRepr).sort();
    throw new LayoutTextError(path, `unknown key(s) ${names.join(", ")} (allowed: ${[...allowed].sort().join(", ")})`);
  }
  for (const key of required) if (!(key in obj)) throw new LayoutTextError(`${path}.${key}`, "missing required field");
}

function checkList(value, path, what) {
  if (!Array.isArray(value)) throw new LayoutTextError(path, `expected ${what}, got ${describe(value)}`);
  return value;
}

function checkObject(value, path) {
  if (!isObject(value)) throw new LayoutTextError(path, `expected a JSON object, got ${describe(value)}`);
  return value;
}

/** A line's style when none is given: "speech" for a speaker, "caption" for narration (Python: default_style). */
export function defaultStyle(speaker) {
  return speaker === null || speaker === undefined ? "caption" : "speech";
}

/**
 * A frame's dialogue list as Layout.from_json checks it (the key is present): lines {text, speaker?, style}, with
 * the style filled in and a null speaker dropped. Throws LayoutTextError.
 */
export function checkDialogue(lines, path, version = LAYOUT_VERSION) {
  if (version < DIALOGUE_VERSION) {
    throw new LayoutTextError(path, `dialogue needs schema version ${DIALOGUE_VERSION} or later (this data says version ${version})`);
  }
  if (lines === null) {
    throw new LayoutTextError(path, "expected a list of dialogue lines, got NoneType None (leave the key out to keep the story's lines)");
  }
  checkList(lines, path, "a list of dialogue lines");
  return lines.map((line, k) => {
    const lpath = `${path}[${k}]`;
    checkObject(line, lpath);
    checkKeys(line, lpath, ["text"], ["speaker", "style"]);
    checkText(line.text, `${lpath}.text`, { maxChars: MAX_CAPTION_CHARS });
    const speaker = line.speaker ?? null;
    if (speaker !== null) checkId(speaker, `${lpath}.speaker`);
    let style = line.style ?? null;
    if (style === null) style = defaultStyle(speaker);
    else if (typeof style !== "string") throw new LayoutTextError(`${lpath}.style`, `expected a string, got ${describe(style)}`);
    else if (!DIALOGUE_STYLES.includes(style)) {
      throw new LayoutTextError(`${lpath}.style`, `unknown style ${pyRepr(style)} (allowed: ${DIALOGUE_STYLES.join(", ")})`);
    }
    return speaker === null ? { text: line.text, style } : { text: line.text, speaker, style };
  });
}

/**
 * Parses and checks layout JSON text like Layout.from_json in Python (same order of checks, paths and wording);
 * returns the layout object with boxes clamped, `frames[i].subjects` always a list, `frames[i].dialogue` (when the
 * frame has the key: its lines replace the story's) a list of {text, speaker?, style}, and every subject's
 * character in `characters` (Python accepts subjects of unlisted characters; the picker needs the id). Throws
 * LayoutTextError.
 */
export function parseLayoutText(text) {
  const data = checkObject(parseJsonStrict(text), "layout");
  // JSON.parse reads 1.0 as 1; Python reads a float and refuses it: look at the literal itself.
  const literal = /"version"\s*:\s*(-?[0-9][0-9.eE+-]*)/.exec(text)?.[1];
  const readable = SUPPORTED_VERSIONS.join(" or ");
  if (SUPPORTED_VERSIONS.includes(data.version) && literal !== undefined && !/^-?[0-9]+$/.test(literal)) {
    throw new LayoutTextError("layout.version", `unsupported schema version float ${literal} (this code reads ${readable})`);
  }
  if ("version" in data && !SUPPORTED_VERSIONS.includes(data.version)) {
    throw new LayoutTextError("layout.version", `unsupported schema version ${describe(data.version)} (this code reads ${readable})`);
  }
  checkKeys(data, "layout", ["version", "frames"], ["characters"]);
  const version = data.version;
  const frames = checkList(data.frames, "layout.frames", "a list of frames");
  if (frames.length > MAX_FRAMES) throw new LayoutTextError("layout.frames", `${frames.length} frames exceed the limit of ${MAX_FRAMES}`);
  frames.forEach((frame, f) => {
    const fpath = `layout.frames[${f}]`;
    checkObject(frame, fpath);
    checkKeys(frame, fpath, [], ["subjects", "dialogue"]);
    const spath = `${fpath}.subjects`;
    frame.subjects = frame.subjects === null || frame.subjects === undefined ? [] : checkList(frame.subjects, spath, "a list of subjects");
    const seen = new Map();
    frame.subjects.forEach((subject, s) => {
      const path = `${spath}[${s}]`;
      checkObject(subject, path);
      checkKeys(subject, path, ["character"], ["box", "caption"]);
      checkId(subject.character, `${path}.character`);
      if (subject.box === null) delete subject.box;
      if (subject.box !== undefined) subject.box = checkBox(subject.box, `${path}.box`);
      const caption = subject.caption;
      if (caption !== undefined && caption !== null) checkText(caption, `${path}.caption`, { maxChars: MAX_CAPTION_CHARS, allowEmpty: true });
    });
    frame.subjects.forEach((subject, s) => {
      if (seen.has(subject.character)) {
        throw new LayoutTextError(`${spath}[${s}].character`,
          `character ${pyRepr(subject.character)} appears twice in this frame (also ${spath}[${seen.get(subject.character)}])`);
      }
      seen.set(subject.character, s);
    });
    if ("dialogue" in frame) frame.dialogue = checkDialogue(frame.dialogue, `${fpath}.dialogue`, version);
  });
  const characters = data.characters ?? [];
  checkList(characters, "layout.characters", "a list of ids");
  characters.forEach((c, i) => checkId(c, `layout.characters[${i}]`));
  characters.forEach((c, i) => {
    const first = characters.indexOf(c);
    if (first !== i) throw new LayoutTextError(`layout.characters[${i}]`, `duplicate character id ${pyRepr(c)} (also layout.characters[${first}])`);
  });
  for (const frame of frames) for (const s of frame.subjects) if (!characters.includes(s.character)) characters.push(s.character);
  data.characters = characters;
  data.version = LAYOUT_VERSION;
  return data;
}

/** Whether a layout frame holds anything (boxes or dialogue lines): the node drops trailing frames that do not. */
export function frameHasContent(frame) {
  return Boolean(frame?.subjects?.length || frame?.dialogue?.length);
}

/**
 * What Story.apply_layout (the node, with a story connected) refuses in a parsed layout: more frames with subjects
 * or dialogue than the story has (trailing empty frames are dropped like the node does), and characters (of boxes
 * and of dialogue lines) the story lacks. `story` is {characters: [ids], prompts: [...]} or null (nothing known: no
 * problems). Returns [{path, detail, frame, subject, line}] (indices, -1 when the problem is not one box's/line's).
 */
export function storyProblems(layout, story) {
  if (!layout || !story || !Array.isArray(story.characters)) return [];
  const problems = [];
  const count = Array.isArray(story.prompts) ? story.prompts.length : null;
  if (count !== null && layout.frames.length > count && layout.frames.slice(count).some(frameHasContent)) {
    const last = layout.frames.length - 1 - [...layout.frames].reverse().findIndex(frameHasContent);
    problems.push({ path: "layout.frames", detail: `has ${layout.frames.length} frames, the story only ${count}`, frame: last,
      subject: -1, line: -1 });
  }
  const known = story.characters.map(pyRepr).join(", ");
  layout.frames.forEach((frame, f) => {
    frame.subjects.forEach((s, k) => {
      if (!story.characters.includes(s.character)) {
        problems.push({ path: `layout.frames[${f}].subjects[${k}].character`, frame: f, subject: k, line: -1,
          detail: `unknown character ${pyRepr(s.character)} (the story has: ${known})` });
      }
    });
    (frame.dialogue ?? []).forEach((line, k) => {
      if (line.speaker !== undefined && line.speaker !== null && !story.characters.includes(line.speaker)) {
        problems.push({ path: `layout.frames[${f}].dialogue[${k}].speaker`, frame: f, subject: -1, line: k,
          detail: `unknown character ${pyRepr(line.speaker)} (the story has: ${known})` });
      }
    });
  });
  return problems;
}

/** Frame, subject and dialogue-line indices named by a field path (-1 where absent). */
export function pathLocation(path) {
  const m = /^layout\.frames\[(\d+)\](?:\.subjects\[(\d+)\]|\.dialogue\[(\d+)\])?/.exec(String(path ?? ""));
  return { frame: m ? Number(m[1]) : -1, subject: m && m[2] !== undefined ? Number(m[2]) : -1,
    line: m && m[3] !== undefined ? Number(m[3]) : -1 };
}

/**
 * A field path in the UI's own numbering: "layout.frames[0].subjects[1].box" -> "frame 1, box 2 (box)",
 * "layout.frames[0].dialogue[1].text" -> "frame 1, line 2 (text)", "<json>" -> "JSON text",
 * "layout.characters[2]" -> "character list, entry 3".
 */
export function humanPath(path) {
  const p = String(path ?? "");
  if (p === JSON_PATH) return "JSON text";
  const m = /^layout\.frames\[(\d+)\](?:\.(subjects|dialogue)\[(\d+)\](?:\.(\w+))?)?(?:\.(\w+))?$/.exec(p);
  if (m) {
    const parts = [`frame ${Number(m[1]) + 1}`];
    if (m[3] !== undefined) parts.push(`${m[2] === "subjects" ? "box" : "line"} ${Number(m[3]) + 1}`);
    const field = m[4] ?? m[5];
    return parts.join(", ") + (field && field !== "subjects" ? ` (${field})` : field === "subjects" ? " (subjects)" : "");
  }
  const c = /^layout\.characters\[(\d+)\]$/.exec(p);
  if (c) return `character list, entry ${Number(c[1]) + 1}`;
  if (p === "layout.frames") return "frames";
  if (p === "layout.characters") return "character list";
  if (p === "layout.version") return "version";
  return p === "layout" ? "layout" : p;
}
