// Unit tests of the pure layout-state functions of web/js/box_canvas.js (run: node --test tests/web/).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  LayoutTextError,
  backgroundFor,
  boxFromDrag,
  boxPixels,
  copyBoxes,
  copySummary,
  findDuplicateKey,
  fitFrames,
  humanPath,
  offsetBox,
  pathLocation,
  prettyLayoutText,
  pruneCharacters,
  snapEdges,
  snapMove,
  snapTargets,
  snapValue,
  storyProblems,
  clamp01,
  cursorForHandle,
  emptyLayout,
  fitRect,
  freeCharacter,
  hitTest,
  layoutToText,
  moveBox,
  newCharacterId,
  normalizeBox,
  parseLayoutText,
  resizeBox,
  roundCoord,
} from "../../web/js/layout_state.js";
import { castIds, readStory, runImageSinks, storyFromNode } from "../../web/js/story_graph.js";
import {
  DIALOGUE_STYLES,
  NEW_LINE_TEXT,
  addLine,
  defaultStyle,
  deleteLine,
  dialogueSpeakers,
  frameDialogue,
  setLine,
  useStoryDialogue,
} from "../../web/js/dialogue_state.js";

const close = (a, b, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);
const closeBox = (a, b, eps = 1e-9) => a.forEach((v, i) => close(v, b[i], eps));

test("clamp01 and roundCoord", () => {
  assert.equal(clamp01(-0.5), 0);
  assert.equal(clamp01(1.5), 1);
  assert.equal(clamp01(0.25), 0.25);
  assert.equal(roundCoord(0.123456), 0.1235);
  assert.ok(Object.is(roundCoord(-0.00001), 0));
});

test("normalizeBox orders corners, clamps and enforces the minimum size inside the frame", () => {
  assert.deepEqual(normalizeBox([0.8, 0.9, 0.2, 0.1]), [0.2, 0.1, 0.8, 0.9]);
  assert.deepEqual(normalizeBox([-0.3, -1, 1.4, 2]), [0, 0, 1, 1]);
  closeBox(normalizeBox([0.5, 0.5, 0.505, 0.5], 0.1), [0.5, 0.5, 0.6, 0.6]);
  closeBox(normalizeBox([0.99, 0.99, 1, 1], 0.1), [0.9, 0.9, 1, 1]);
});

test("boxFromDrag ignores drags smaller than the minimum size and clamps to the frame", () => {
  assert.equal(boxFromDrag(0.5, 0.5, 0.51, 0.9, 0.02), null);
  assert.equal(boxFromDrag(0.5, 0.5, 0.9, 0.505, 0.02), null);
  assert.deepEqual(boxFromDrag(0.9, 0.8, 0.1, 0.2, 0.02), [0.1, 0.2, 0.9, 0.8]);
  assert.deepEqual(boxFromDrag(-0.2, 0.5, 0.4, 1.3, 0.02), [0, 0.5, 0.4, 1]);
});

test("moveBox keeps the size and stops at the frame edges", () => {
  closeBox(moveBox([0.1, 0.1, 0.3, 0.4], 0.2, 0.1), [0.3, 0.2, 0.5, 0.5]);
  closeBox(moveBox([0.1, 0.1, 0.3, 0.4], 5, 5), [0.8, 0.7, 1, 1]);
  closeBox(moveBox([0.1, 0.1, 0.3, 0.4], -5, -5), [0, 0, 0.2, 0.3]);
  const moved = moveBox([0.2, 0.3, 0.5, 0.7], 0.77, -0.123);
  close(moved[2] - moved[0], 0.3, 1e-4);
  close(moved[3] - moved[1], 0.4, 1e-4);
});

test("resizeBox drags the handle's edges, never flips, clamps and keeps the minimum size", () => {
  const box = [0.2, 0.2, 0.6, 0.6];
  closeBox(resizeBox(box, "se", 0.8, 0.9), [0.2, 0.2, 0.8, 0.9]);
  closeBox(resizeBox(box, "nw", -1, -1), [0, 0, 0.6, 0.6]);
  closeBox(resizeBox(box, "e", 0.0, 0.0, 0.05), [0.2, 0.2, 0.25, 0.6]);
  closeBox(resizeBox(box, "n", 0.9, 0.9, 0.05), [0.2, 0.55, 0.6, 0.6]);
  closeBox(resizeBox(box, "w", 0.3, 0.0), [0.3, 0.2, 0.6, 0.6]);
  closeBox(resizeBox(box, "s", 0.0, 2), [0.2, 0.2, 0.6, 1]);
  assert.throws(() => resizeBox(box, "middle", 0, 0), /unknown handle/);
});

test("hitTest finds handles, interiors, the selected box first, and skips boxes that are null", () => {
  const boxes = [[0.1, 0.1, 0.5, 0.5], null, [0.4, 0.4, 0.9, 0.9]];
  const tol = 0.01;
  assert.equal(hitTest(boxes, 0.95, 0.05, tol, tol), null);
  assert.deepEqual(hitTest(boxes, 0.2, 0.2, tol, tol), { index: 0, handle: "move" });
  assert.deepEqual(hitTest(boxes, 0.45, 0.45, tol, tol), { index: 2, handle: "move" }); // the top box wins
  assert.deepEqual(hitTest(boxes, 0.45, 0.45, tol, tol, 0), { index: 0, handle: "move" }); // unless one is selected
  assert.deepEqual(hitTest(boxes, 0.1, 0.1, tol, tol), { index: 0, handle: "nw" });
  assert.deepEqual(hitTest(boxes, 0.905, 0.6, tol, tol), { index: 2, handle: "e" });
  assert.deepEqual(hitTest(boxes, 0.6, 0.895, tol, tol), { index: 2, handle: "s" });
  assert.deepEqual(hitTest(boxes, 0.9, 0.4, tol, tol), { index: 2, handle: "ne" });
  assert.deepEqual(hitTest(boxes, 0.095, 0.3, tol, tol), { index: 0, handle: "w" });
  assert.equal(hitTest([null], 0.5, 0.5, tol, tol), null);
});

test("cursorForHandle", () => {
  assert.equal(cursorForHandle(null), "crosshair");
  assert.equal(cursorForHandle("move"), "move");
  assert.equal(cursorForHandle("n"), "ns-resize");
  assert.equal(cursorForHandle("w"), "ew-resize");
  assert.equal(cursorForHandle("se"), "nwse-resize");
  assert.equal(cursorForHandle("ne"), "nesw-resize");
});

test("parseLayoutText round-trips a valid layout and adds subject characters missing from the list", () => {
  const text = JSON.stringify({
    version: 1,
    characters: ["hero"],
    frames: [{ subjects: [{ character: "hero", box: [0.1, 0.2, 0.3, 0.4], caption: "red coat" },
      { character: "villain" }] }, { subjects: [] }, {}],
  });
  const layout = parseLayoutText(text);
  assert.deepEqual(layout.characters, ["hero", "villain"]);
  assert.equal(layout.frames.length, 3);
  assert.deepEqual(layout.frames[2].subjects, []);
  const again = parseLayoutText(layoutToText(layout));
  assert.deepEqual(again, layout);
});

// The cases shared with the Python schema and node (tests/web/test_layout_cases.py): the canvas must refuse exactly
// what the node refuses, naming the same field.
const CASES = JSON.parse(readFileSync(new URL("./layout_json_cases.json", import.meta.url), "utf8")).cases;

test("the shared layout-JSON cases: same verdict, path and wording as the Python side", () => {
  assert.ok(CASES.length >= 40);
  for (const c of CASES) {
    const text = c.text ?? JSON.stringify(c.layout);
    const expected = c.js_error ?? c.error;
    let layout = null;
    let error = null;
    try {
      layout = parseLayoutText(text);
    } catch (err) {
      assert.ok(err instanceof LayoutTextError, `${c.name}: ${err}`);
      error = { path: err.path, detail: err.detail };
    }
    if (!error && c.story) {
      const [problem] = storyProblems(layout, c.story);
      if (problem) error = { path: problem.path, detail: problem.detail };
    }
    if (expected === null) {
      assert.equal(error, null, `${c.name}: expected valid, got ${JSON.stringify(error)}`);
      continue;
    }
    assert.ok(error, `${c.name}: expected ${expected.path}: ${expected.contains}, but the canvas accepted it`);
    assert.equal(error.path, expected.path, `${c.name}: ${error.path}: ${error.detail}`);
    assert.ok(error.detail.includes(expected.contains), `${c.name}: ${JSON.stringify(error.detail)} lacks ${JSON.stringify(expected.contains)}`);
    assert.equal(humanPath(error.path), expected.where, c.name);
    const at = pathLocation(error.path);
    if (/frame \d+, box \d+/.test(expected.where)) assert.ok(at.frame >= 0 && at.subject >= 0, c.name);
    if (/frame \d+, line \d+/.test(expected.where)) assert.ok(at.frame >= 0 && at.line >= 0, c.name);
  }
});

test("findDuplicateKey sees keys at any depth and ignores strings that are values", () => {
  assert.equal(findDuplicateKey('{"a": 1, "b": {"a": 2}}'), null);
  assert.equal(findDuplicateKey('{"a": "a", "b": ["a", "a"]}'), null);
  assert.equal(findDuplicateKey('{"a": 1, "b": {"c": 2, "c": 3}}'), "c");
  assert.equal(findDuplicateKey('{"x\\"y": 1, "x\\"y": 2}'), 'x"y');
  assert.equal(findDuplicateKey('[{"k": 1}, {"k": 2}]'), null);
  assert.equal(findDuplicateKey('{"a": {}, "a": []}'), "a");
});

test("parseLayoutText clamps boxes just outside [0, 1] like the Python schema", () => {
  const layout = parseLayoutText(JSON.stringify({ version: 1, frames: [{ subjects: [{ character: "a",
    box: [-0.0005, 0, 1.0005, 1] }] }] }));
  assert.deepEqual(layout.frames[0].subjects[0].box, [0, 0, 1, 1]);
});

test("layoutToText rounds coordinates and drops blank captions", () => {
  const layout = emptyLayout(2, ["hero"]);
  layout.frames[1].subjects.push({ character: "hero", box: [0.123456, 0, 0.5, 0.77777], caption: "  " });
  const data = JSON.parse(layoutToText(layout));
  assert.deepEqual(data.frames[1].subjects[0], { character: "hero", box: [0.1235, 0, 0.5, 0.7778] });
  assert.deepEqual(data.frames[0], { subjects: [] });
  assert.equal(data.version, 2);
});

test("freeCharacter and newCharacterId (newCharacterId is for the + new character field only)", () => {
  const layout = emptyLayout(1, ["hero", "villain"]);
  assert.equal(freeCharacter(layout, 0), "hero");
  assert.equal(freeCharacter(layout, 0, "villain"), "villain");
  layout.frames[0].subjects.push({ character: "hero" });
  assert.equal(freeCharacter(layout, 0, "hero"), "villain");
  layout.frames[0].subjects.push({ character: "villain" });
  assert.equal(freeCharacter(layout, 0), null);
  assert.equal(newCharacterId(layout, "hero"), "hero2");
  assert.equal(newCharacterId(layout), "character");
});

test("backgroundFor and fitRect", () => {
  assert.equal(backgroundFor([], 0), null);
  assert.equal(backgroundFor(["a"], 3), "a");
  assert.equal(backgroundFor(["a", "b"], 1), "b");
  assert.equal(backgroundFor(["a", "b"], 2), null);
  assert.deepEqual(fitRect(200, 100, 1), { x: 50, y: 0, w: 100, h: 100 });
  assert.deepEqual(fitRect(200, 100, 4), { x: 0, y: 25, w: 200, h: 50 });
  assert.deepEqual(fitRect(0, 100, 1), { x: 0, y: 0, w: 0, h: 0 });
});

test("snapping: the 1/8 grid and other boxes' edges, within the tolerance only", () => {
  const targets = snapTargets([[0.1, 0.1, 0.3, 0.3], [0.52, 0.6, 0.7, 0.9]], 1);
  assert.ok(targets.xs.includes(0.125) && targets.xs.includes(0.3) && !targets.xs.includes(0.52));
  assert.equal(snapValue(0.13, targets.xs, 0.01), 0.125);
  assert.equal(snapValue(0.2, targets.xs, 0.01), 0.2);
  assert.equal(snapValue(0.305, targets.xs, 0.01), 0.3);
  // a move snaps the nearest edge and keeps the size
  closeBox(snapMove([0.31, 0.5, 0.51, 0.7], targets, 0.02, 0.02), [0.3, 0.5, 0.5, 0.7], 1e-9);
  // a resize snaps only the dragged edges
  closeBox(snapEdges([0.2, 0.2, 0.61, 0.74], "se", targets, 0.02, 0.02), [0.2, 0.2, 0.625, 0.75], 1e-9);
  closeBox(snapEdges([0.21, 0.2, 0.61, 0.74], "e", targets, 0.02, 0.02), [0.21, 0.2, 0.625, 0.74], 1e-9);
});

test("copyBoxes copies only characters without a box there, keeps the others and says so", () => {
  const layout = emptyLayout(3, ["hero", "friend"]);
  layout.frames[0].subjects.push({ character: "hero", box: [0.1, 0.1, 0.4, 0.4], caption: "waving" });
  layout.frames[1].subjects.push({ character: "hero", box: [0.5, 0.5, 0.9, 0.9] }, { character: "friend", box: [0, 0, 0.2, 0.2] });
  const report = copyBoxes(layout, 0, [0, 1, 2]);
  assert.deepEqual(report, { frames: 2, copied: [{ frame: 2, character: "hero" }], kept: [{ frame: 1, character: "hero" }] });
  assert.equal(copySummary(report), "copied hero to frame 3; kept the box already there (hero in frame 2): delete it there first to replace it");
  assert.deepEqual(layout.frames[1].subjects, [{ character: "hero", box: [0.5, 0.5, 0.9, 0.9] },
    { character: "friend", box: [0, 0, 0.2, 0.2] }]); // frame 2's own hero box is not replaced
  assert.deepEqual(layout.frames[2].subjects, [{ character: "hero", box: [0.1, 0.1, 0.4, 0.4], caption: "waving" }]);
  layout.frames[2].subjects[0].box[0] = 0.3; // copies, not shared arrays
  assert.equal(layout.frames[0].subjects[0].box[0], 0.1);
  assert.deepEqual(copyBoxes(layout, 1, [0], 1), { frames: 1, copied: [{ frame: 0, character: "friend" }], kept: [] });
  assert.deepEqual(layout.frames[0].subjects.map((s) => s.character), ["hero", "friend"]);
  const again = copyBoxes(layout, 1, [0], 1); // the same box is already there: nothing copied, nothing to keep
  assert.equal(copySummary(again), "nothing copied: the same boxes are already there");
  assert.equal(copySummary({ frames: 0, copied: [], kept: [] }), "no other frame to copy to");
  const many = { frames: 6, copied: [1, 2, 3, 4, 5, 6].map((f) => ({ frame: f, character: "hero" })), kept: [] };
  assert.equal(copySummary(many), "copied hero to frames 2, 3, 4, 5 and 2 more");
  closeBox(offsetBox([0.1, 0.1, 0.4, 0.4]), [0.14, 0.14, 0.44, 0.44], 1e-9);
  closeBox(offsetBox([0.7, 0.7, 1, 1]), [0.66, 0.66, 0.96, 0.96], 1e-9);
});

test("pruneCharacters drops ids no box uses unless kept; story characters come first", () => {
  const layout = emptyLayout(2, ["hero", "character", "villain"]);
  layout.frames[1].subjects.push({ character: "villain", box: [0, 0, 1, 1] });
  assert.ok(pruneCharacters(layout, ["hero"]));
  assert.deepEqual(layout.characters, ["hero", "villain"]);
  assert.ok(pruneCharacters(layout, [], ["friend", "hero"]));
  assert.deepEqual(layout.characters, ["friend", "hero", "villain"]);
  assert.ok(!pruneCharacters(layout, [], ["friend", "hero"]));
  layout.frames[0].dialogue = [{ text: "Hi", speaker: "owl", style: "speech" }, { text: "Later", style: "caption" }];
  assert.ok(pruneCharacters(layout, [], ["friend"])); // a speaker stays in the list like a box's character
  assert.deepEqual(layout.characters, ["friend", "villain", "owl"]);
});

test("fitFrames pads to the story's length and drops only trailing empty frames", () => {
  const layout = emptyLayout(2);
  assert.ok(fitFrames(layout, 4));
  assert.equal(layout.frames.length, 4);
  layout.frames[2].subjects.push({ character: "hero" });
  assert.ok(fitFrames(layout, 2));
  assert.equal(layout.frames.length, 3); // frame 3 has a subject: kept (and reported by storyProblems)
  assert.deepEqual(storyProblems(layout, { characters: ["hero"], prompts: ["a", "b"] }).map((p) => p.path), ["layout.frames"]);
  layout.frames[2].subjects = [];
  layout.frames[2].dialogue = [{ text: "The end.", style: "caption" }];
  assert.ok(!fitFrames(layout, 2)); // a frame with dialogue lines is not empty either
  layout.frames[2].dialogue = [];
  assert.ok(fitFrames(layout, 2));
  assert.equal(layout.frames.length, 2);
});

test("dialogue lines: the story's shown until the first edit copies them; add, set, delete, back to the story's", () => {
  const layout = emptyLayout(2, ["hero", "cat"]);
  const story = { characters: ["hero", "cat"], prompts: ["a", "b"],
    dialogue: [[{ text: "Hello", speaker: "hero" }, { text: "Meanwhile", style: "caption" }], []] };
  assert.deepEqual(frameDialogue(layout, story, 0), { fromStory: true, lines: [
    { text: "Hello", speaker: "hero", style: "speech" }, { text: "Meanwhile", style: "caption" }] });
  assert.deepEqual(frameDialogue(layout, null, 0), { fromStory: true, lines: [] });
  assert.ok(setLine(layout, story, 0, 0, { text: "Hi there" })); // the frame now owns a copy of the story's lines
  assert.deepEqual(layout.frames[0].dialogue, [{ text: "Hi there", speaker: "hero", style: "speech" },
    { text: "Meanwhile", style: "caption" }]);
  assert.equal(story.dialogue[0][0].text, "Hello");
  assert.ok(!setLine(layout, story, 0, 0, { text: "   " })); // empty text is refused, as the schema refuses it
  assert.equal(layout.frames[0].dialogue[0].text, "Hi there");
  assert.ok(setLine(layout, story, 0, 0, { speaker: null })); // a speech line turned narration: a caption box
  assert.deepEqual(layout.frames[0].dialogue[0], { text: "Hi there", style: "caption" });
  assert.ok(setLine(layout, story, 0, 0, { speaker: "cat", style: "thought" }));
  assert.deepEqual(layout.frames[0].dialogue[0], { text: "Hi there", speaker: "cat", style: "thought" });
  assert.ok(setLine(layout, story, 0, 0, { speaker: "hero" })); // a style of one's own is kept
  assert.equal(layout.frames[0].dialogue[0].style, "thought");
  assert.ok(!setLine(layout, story, 0, 5, { text: "x" }));
  assert.ok(setLine(layout, story, 0, 1, { text: "y".repeat(1200) }));
  assert.equal(layout.frames[0].dialogue[1].text.length, 1000);
  assert.equal(addLine(layout, story, 1, "cat"), 0);
  assert.deepEqual(layout.frames[1].dialogue, [{ text: NEW_LINE_TEXT, speaker: "cat", style: "speech" }]);
  assert.deepEqual(dialogueSpeakers(layout), ["hero", "cat"]);
  assert.ok(deleteLine(layout, story, 1, 0) && !deleteLine(layout, story, 1, 0));
  assert.deepEqual(layout.frames[1].dialogue, []); // owns no lines: the story's are replaced by none
  assert.deepEqual(parseLayoutText(layoutToText(layout)).frames[1].dialogue, []);
  assert.ok(useStoryDialogue(layout, 1) && !useStoryDialogue(layout, 1));
  assert.ok(!("dialogue" in JSON.parse(layoutToText(layout)).frames[1]));
  assert.equal(defaultStyle(undefined), "caption");
  assert.deepEqual(DIALOGUE_STYLES, ["speech", "thought", "shout", "caption"]);
});

test("prettyLayoutText is the same layout, indented, with boxes on one line", () => {
  const layout = emptyLayout(1);
  layout.frames[0].subjects.push({ character: "hero", box: [0.1, 0.2, 0.3, 0.4] });
  const text = prettyLayoutText(layout);
  assert.ok(text.includes('"box": [0.1, 0.2, 0.3, 0.4]') && text.split("\n").length > 8);
  assert.deepEqual(parseLayoutText(text), parseLayoutText(layoutToText(layout)));
  assert.deepEqual(boxPixels([0.1, 0.2, 0.3, 0.4], 640, 480), { x: 64, y: 96, w: 128, h: 96 });
});

test("humanPath and pathLocation number frames and boxes from 1", () => {
  assert.equal(humanPath("layout.frames[0].subjects[1].character"), "frame 1, box 2 (character)");
  assert.equal(humanPath("layout.frames[3]"), "frame 4");
  assert.equal(humanPath("<json>"), "JSON text");
  assert.equal(humanPath("layout.frames[1].dialogue[2].speaker"), "frame 2, line 3 (speaker)");
  assert.equal(humanPath("layout.frames[1].dialogue"), "frame 2 (dialogue)");
  assert.deepEqual(pathLocation("layout.frames[2].subjects[0].box"), { frame: 2, subject: 0, line: -1 });
  assert.deepEqual(pathLocation("layout.frames[2].dialogue[1].text"), { frame: 2, subject: -1, line: 1 });
  assert.deepEqual(pathLocation("layout.frames"), { frame: -1, subject: -1, line: -1 });
});

// A tiny stand-in for a LiteGraph graph: nodes with inputs/outputs and a links table, as the frontend keeps them.
function fakeGraph(nodes, links) {
  const graph = { nodes: [], links: new Map(), getNodeById: (id) => graph.nodes.find((n) => n.id === id) ?? null };
  for (const n of nodes) graph.nodes.push({ inputs: [], outputs: [], widgets: [], ...n, graph });
  links.forEach(([id, from, fromSlot, to, toName]) => {
    const src = graph.getNodeById(from);
    const dst = graph.getNodeById(to);
    graph.links.set(id, { id, origin_id: from, origin_slot: fromSlot, target_id: to });
    src.outputs[fromSlot] = src.outputs[fromSlot] ?? { links: [] };
    src.outputs[fromSlot].links.push(id);
    const input = dst.inputs.find((i) => i.name === toName) ?? dst.inputs[dst.inputs.push({ name: toName }) - 1];
    input.link = id;
  });
  return graph;
}
const widgets = (values) => Object.entries(values).map(([name, value]) => ({ name, value }));

test("readStory reads a Story node's widgets, a Story from JSON, and through a layout toggle", () => {
  const g = fakeGraph([
    { id: 1, type: "L2S_Story", widgets: widgets({ identity: "a star", frame_prompts: "on the grass\n\n in the sky \n", width: 64, height: 48, character_id: " star " }) },
    { id: 2, type: "L2S_LayoutToggle" },
    { id: 3, type: "L2S_LayoutEditor" },
    { id: 4, type: "L2S_StoryFromJSON", widgets: widgets({ story_json: JSON.stringify({ version: 1, width: 512, height: 256,
      characters: [{ id: "hero", identity: "x" }, { id: "friend", identity: "y" }], frames: [{ prompt: "a" }, { prompt: "b" }] }) }) },
    { id: 5, type: "L2S_LayoutEditor" },
    { id: 6, type: "L2S_LayoutEditor" },
  ], [[1, 1, 0, 2, "story"], [2, 2, 0, 3, "story"], [3, 4, 0, 5, "story"]]);
  assert.deepEqual(readStory(g.getNodeById(3)), { characters: ["star"], prompts: ["on the grass", "in the sky"], width: 64, height: 48 });
  assert.deepEqual(readStory(g.getNodeById(5)), { characters: ["hero", "friend"], prompts: ["a", "b"], width: 512, height: 256,
    dialogue: [[], []] });
  assert.equal(readStory(g.getNodeById(6)), null); // nothing connected
  assert.equal(storyFromNode({ type: "L2S_StoryFromJSON", widgets: widgets({ story_json: "{bad" }) }), null);
});

test("readStory reads the characters of a cast chain (Character -> Character -> Story), first in chain first", () => {
  const g = fakeGraph([
    { id: 1, type: "L2S_Character", widgets: widgets({ character_id: "hero", identity: "a fox" }) },
    { id: 2, type: "L2S_Character", widgets: widgets({ character_id: " cat ", identity: "a cat" }) },
    { id: 3, type: "L2S_Character", widgets: widgets({ character_id: "owl", identity: "an owl" }) },
    { id: 4, type: "L2S_Story", widgets: widgets({ frame_prompts: "[hero, cat] on the grass\nin the sky", character_id: "hero", width: 64, height: 64 }) },
    { id: 5, type: "L2S_LayoutEditor" },
    { id: 6, type: "SomeOtherCastSource" },
    { id: 7, type: "L2S_Story", widgets: widgets({ frame_prompts: "a" }) },
    { id: 8, type: "L2S_LayoutEditor" },
  ], [[1, 1, 0, 2, "cast"], [2, 2, 0, 3, "cast"], [3, 3, 0, 4, "cast"], [4, 4, 0, 5, "story"],
    [5, 6, 0, 7, "cast"], [6, 7, 0, 8, "story"]]);
  assert.deepEqual(castIds(g.getNodeById(4)), ["hero", "cat", "owl"]);
  assert.deepEqual(readStory(g.getNodeById(5)), { characters: ["hero", "cat", "owl"],
    prompts: ["[hero, cat] on the grass", "in the sky"], width: 64, height: 64 });
  assert.equal(readStory(g.getNodeById(8)), null); // a cast the editor cannot read before a run: unknown, not wrong
  assert.deepEqual(castIds(g.getNodeById(1)), []);
});

test("runImageSinks finds the image outputs of a sampler downstream of the editor, not the pack's drawing nodes", () => {
  const g = fakeGraph([
    { id: 1, type: "L2S_LayoutEditor" }, { id: 2, type: "L2S_LayoutToggle" }, { id: 3, type: "L2S_StorySampler" },
    { id: 4, type: "SaveImage" }, { id: 5, type: "L2S_LayoutPreview" }, { id: 6, type: "PreviewImage" },
  ], [[1, 1, 1, 2, "story"], [2, 2, 0, 3, "story"], [3, 3, 0, 4, "images"], [4, 3, 0, 5, "images"], [5, 3, 1, 6, "latent"]]);
  assert.deepEqual(runImageSinks(g.getNodeById(1)).map((n) => n.id), [4]);
});
