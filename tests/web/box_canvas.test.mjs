// Unit tests of the pure layout-state functions of web/js/box_canvas.js (run: node --test tests/web/).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  LayoutTextError,
  backgroundFor,
  boxFromDrag,
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
} from "../../web/js/box_canvas.js";

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

test("parseLayoutText names the bad field", () => {
  const bad = (obj) => JSON.stringify(obj);
  const cases = [
    ["{not json", /^layout_json: invalid JSON/],
    ["", /^layout_json: is empty/],
    ["[1]", /^layout: expected a JSON object/],
    [bad({ version: 2, frames: [] }), /^layout\.version: unsupported schema version 2/],
    [bad({ version: 1, frames: [], extra: 1 }), /^layout: unknown key\(s\) "extra"/],
    [bad({ version: 1, frames: {} }), /^layout\.frames: expected a list/],
    [bad({ version: 1, characters: ["a", "a"], frames: [] }), /^layout\.characters\[1\]: duplicate/],
    [bad({ version: 1, characters: [" a"], frames: [] }), /^layout\.characters\[0\]: must not start or end/],
    [bad({ version: 1, frames: [{ subjects: [{ character: "a", box: [0.5, 0, 0.2, 1] }] }] }),
      /^layout\.frames\[0\]\.subjects\[0\]\.box: x1 0\.2 must be greater than x0 0\.5/],
    [bad({ version: 1, frames: [{}, { subjects: [{ character: "a", box: [0, 0, 1, 1.5] }] }] }),
      /^layout\.frames\[1\]\.subjects\[0\]\.box: y1 1\.5 is outside \[0, 1\]/],
    [bad({ version: 1, frames: [{ subjects: [{ character: "a", box: [0, 0, 1] }] }] }),
      /^layout\.frames\[0\]\.subjects\[0\]\.box: expected 4 numbers/],
    [bad({ version: 1, frames: [{ subjects: [{ character: "a" }, { character: "a" }] }] }),
      /^layout\.frames\[0\]\.subjects\[1\]\.character: character "a" appears twice/],
    [bad({ version: 1, frames: [{ subjects: [{ box: [0, 0, 1, 1] }] }] }),
      /^layout\.frames\[0\]\.subjects\[0\]\.character: missing required field/],
    [bad({ version: 1, frames: [{ subjects: [{ character: "a", caption: 3 }] }] }),
      /^layout\.frames\[0\]\.subjects\[0\]\.caption: expected a string/],
    [bad({ version: 1, frames: [{ people: [] }] }), /^layout\.frames\[0\]: unknown key\(s\) "people"/],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => parseLayoutText(text), (err) => err instanceof LayoutTextError && pattern.test(err.message),
      `expected ${pattern} for ${text}`);
  }
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
  assert.equal(data.version, 1);
});

test("freeCharacter and newCharacterId", () => {
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
