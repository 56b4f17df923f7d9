// Drives the layout editor of the shipped lay2story_drawn_layout workflow in the real ComfyUI frontend (Debian's
// chromium through playwright-core) as an artist would: a second box on a one-character story, a two-character
// story connected while editing, the right-click menu, Shift snapping, copies between frames, a run's frames behind
// the boxes, a bad character outlined in red, save + reload, screenshots at 100% and 200% zoom, and a second page at
// device scale factor 2. Writes what it saw as JSON for tests/web/test_story_editor_browser.py.
// Usage: node drive_story_editor.mjs CONFIG_JSON_FILE.
import { readFileSync } from "node:fs";

import { NODE_ID, editorDriver, openFrontend, runDriver } from "./editor_page.mjs";

await runDriver(async ({ browser, config, result, mark, page, d }) => {
  const snap = async (name) => {
    await page.waitForTimeout(60);
    result.steps[name] = await d.state();
  };
  const menu = async (point, action, { force = false } = {}) => {
    await d.click(point, { button: "right" });
    await page.locator(".l2s-menu").waitFor({ state: "visible" });
    result.checks[`menu_${action}`] = await page.evaluate(() =>
      [...document.querySelectorAll(".l2s-menu-item")].map((e) => e.dataset.action));
    await page.click(`.l2s-menu-item[data-action='${action}']`, { force });
  };
  // Puts the editor node at the top left of the screen at `scale`.
  const focusEditor = (scale) => page.evaluate((s) => {
    const node = window.__l2sNode;
    app.canvas.ds.scale = s;
    app.canvas.ds.offset = [-node.pos[0] + 90 / s, -node.pos[1] + 60 / s];
    app.canvas.setDirty(true, true);
  }, scale);

  // 1. The shipped workflow, saved with a small editor node (as older copies are): the minimum size applies.
  const workflow = JSON.parse(readFileSync(config.workflow, "utf8"));
  const saved = workflow.nodes.find((n) => n.type === NODE_ID);
  saved.size = [320, 138];
  await page.evaluate(async (wf) => {
    await app.loadGraphData(wf);
    window.__l2sNode = app.graph.nodes.find((n) => n.type === "L2S_LayoutEditor");
  }, workflow);
  await focusEditor(1);
  await d.canvas().waitFor({ state: "visible" });
  await page.waitForTimeout(400);
  await snap("loaded");
  result.checks.preview_node_size = await page.evaluate(() => [...app.graph.nodes.find((n) => n.type === "L2S_LayoutPreview").size]);
  await d.closeDialogs(); // frontend 1.27 opens a missing-nodes dialog for its default graph at start
  await page.mouse.move(...(await d.at([0.3, 0.7]))); // hover the hero box: its full caption as the tooltip
  result.checks.hover_title = await page.evaluate(() => window.__l2sNode.l2sEditor.canvas.title);

  // 2. A second box on frame 1 of a one-character story: no box, no invented character, a clear status.
  await d.drag([0.55, 0.1], [0.9, 0.4]);
  await snap("second_box_refused");

  // 3. Connect a two-character story (Story from JSON) while editing: its characters, prompts and size are read.
  await page.evaluate((storyJson) => {
    const editor = window.__l2sNode;
    const story = LiteGraph.createNode("L2S_StoryFromJSON");
    story.pos = [editor.pos[0] - 420, editor.pos[1] + 780];
    app.graph.add(story);
    story.widgets.find((w) => w.name === "story_json").value = storyJson;
    story.connect(0, editor, editor.inputs.findIndex((i) => i.name === "story"));
    window.__l2sStory = story;
    app.canvas.setDirty(true, true);
  }, JSON.stringify(config.story));
  await page.waitForTimeout(300);
  await snap("story_connected");
  await d.drag([0.55, 0.1], [0.9, 0.4]);
  await snap("second_box");
  result.checks.two_box_prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);

  // 4. Right-click menu on the new box: copy to all frames; then on frame 3 make it full-frame and change character.
  await menu([0.7, 0.25], "copy-all");
  await snap("copied_to_all");
  await page.keyboard.press("PageDown");
  await page.keyboard.press("PageDown");
  await snap("page_down");
  await menu([0.7, 0.25], "full-frame");
  await snap("full_frame");
  await menu([0.05, 0.95], "character:hero", { force: true }); // the full-frame friend box: hero has a box here -> disabled, no change
  await snap("character_taken");
  await page.keyboard.press("Escape");
  await menu([0.5, 0.5], "delete");
  await snap("menu_deleted");

  // 5. Copy from the previous frame (frame 2's boxes into frame 3), and the context menu on empty space.
  await page.click(".l2s-nav button[title^='Copy the previous frame']");
  await snap("copied_prev");
  await page.keyboard.press("PageUp");
  await page.keyboard.press("PageUp");

  // 6. Shift-drag snaps to the 1/8 grid: hero's box (frame 1, x0 0.08) moved right by 0.0525 lands on x0 0.125;
  // the same drag without Shift does not snap.
  await d.drag([0.28, 0.65], [0.3325, 0.65]);
  await snap("moved_free");
  await d.drag([0.3325, 0.65], [0.28, 0.65]);
  await d.drag([0.28, 0.65], [0.3325, 0.65], { shift: true });
  await snap("moved_snapped");
  // resize the friend box's right edge to near another box's edge? -> its left edge to 0.5 (the grid)
  await d.drag([0.55, 0.25], [0.51, 0.25], { shift: true });
  await snap("resized_snapped");

  // 7. The size readout while dragging (mouse held down).
  const [sx, sy] = await d.at([0.7, 0.3]);
  await page.mouse.move(sx, sy);
  await page.mouse.down();
  const [tx, ty] = await d.at([0.75, 0.35]);
  await page.mouse.move(tx, ty, { steps: 3 });
  result.checks.readout_while_dragging = (await d.state()).readout;
  await page.mouse.up();

  // 8. A run: the SaveImage fed by the sampler reports its frames; they show behind the boxes, per frame.
  await d.showRunFrames(config.run_records);
  await page.waitForFunction(() => {
    const images = [...window.__l2sNode.l2sEditor.images.values()];
    return images.length >= 2 && images.every((img) => img.complete && img.naturalWidth > 0);
  });
  await page.evaluate(() => window.__l2sNode.l2sEditor.redraw());
  result.pixels.run_frame1 = await d.pixel(0.97, 0.03); // frame 1's run image: red
  await page.keyboard.press("PageDown");
  await page.waitForTimeout(50);
  result.pixels.run_frame2 = await d.pixel(0.97, 0.03); // frame 2's: green
  await page.keyboard.press("PageUp");

  // 9. Screenshots at 100% and 200% zoom; the canvas is sized to its on-screen box times devicePixelRatio.
  await d.click([0.28, 0.65]); // select hero's box: handles and its full caption
  for (const [name, scale] of [["100", 1], ["200", 2]]) {
    await focusEditor(scale);
    await page.waitForTimeout(600);
    result.checks[`sharpness_${name}`] = await d.sharpness();
    if (config.screenshot_dir) {
      const box = await page.locator(".l2s-box-editor").boundingBox();
      const clip = { x: Math.max(0, box.x - 12), y: Math.max(0, box.y - 46 * scale), width: Math.min(1400, box.width + 24),
        height: Math.min(1100 - Math.max(0, box.y - 46 * scale), box.height + 58 * scale) };
      await page.screenshot({ path: `${config.screenshot_dir}/layout_editor_zoom_${name}.png`, clip });
    }
  }
  await focusEditor(1);
  await page.waitForTimeout(200);

  // 10. A box whose character the story lacks: the editor is in error, names frame/box, outlines it in red.
  const good = (await d.state()).json;
  const bad = JSON.parse(good);
  bad.frames[0].subjects.push({ character: "ghost", box: [0.6, 0.6, 0.9, 0.9] });
  bad.characters.push("ghost");
  await d.setJson(JSON.stringify(bad));
  await page.waitForFunction(() => window.__l2sNode.l2sEditor.root.dataset.state === "error");
  await snap("ghost");
  result.checks.ghost_red_pixels = await d.redPixels();
  await d.setJson(good);
  await page.waitForFunction(() => window.__l2sNode.l2sEditor.root.dataset.state === "ok");
  result.checks.ok_red_pixels = await d.redPixels();

  // 11. Save and reload: same layout, same links, story read again, size kept.
  const savedGraph = await page.evaluate(() => JSON.parse(JSON.stringify(app.graph.serialize())));
  await page.evaluate(async (wf) => {
    await app.loadGraphData(wf);
    window.__l2sNode = app.graph.nodes.find((n) => n.type === "L2S_LayoutEditor");
  }, savedGraph);
  await focusEditor(1);
  await page.waitForTimeout(400);
  await snap("reloaded");
  result.checks.reloaded_prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);
  mark("story_done");

  // 12. Device scale factor 2, ComfyUI zoom 1.5: the canvas backing is 3x its layout size, and boxes sit where the
  // JSON says (pixels just inside a box edge are tinted, just outside are not); a drawn box lands where dragged.
  const hi = await openFrontend(browser, config, result, { viewport: { width: 1200, height: 1000 }, deviceScaleFactor: 2 });
  const h = editorDriver(hi);
  await hi.evaluate((layout) => {
    app.graph.clear();
    const node = LiteGraph.createNode("L2S_LayoutEditor");
    node.pos = [60, 60];
    app.graph.add(node);
    node.widgets.find((w) => w.name === "layout_json").value = layout;
    app.canvas.ds.scale = 1.5;
    app.canvas.ds.offset = [0, 0];
    app.canvas.setDirty(true, true);
    window.__l2sNode = node;
  }, JSON.stringify({ version: 1, characters: ["hero"], frames: [{ subjects: [{ character: "hero", box: [0.2, 0.3, 0.6, 0.7] }] }, { subjects: [] }] }));
  await h.canvas().waitFor({ state: "visible" });
  await hi.waitForTimeout(400);
  result.checks.hidpi_sharpness = await h.sharpness();
  result.pixels.hidpi = {
    inside_left: await h.pixel(0.21, 0.5), outside_left: await h.pixel(0.19, 0.5),
    inside_right: await h.pixel(0.59, 0.5), outside_right: await h.pixel(0.61, 0.5),
    inside_top: await h.pixel(0.4, 0.31), outside_top: await h.pixel(0.4, 0.29),
    inside_bottom: await h.pixel(0.4, 0.69), outside_bottom: await h.pixel(0.4, 0.71),
  };
  await hi.keyboard.press("Escape");
  await hi.click(".l2s-nav button[title^='Next frame']");
  await h.drag([0.1, 0.15], [0.45, 0.8]);
  result.steps.hidpi_drawn = await h.state();
  mark("hidpi_done");
}, { fields: { pixels: {} }, contextOptions: { viewport: { width: 1400, height: 1100 } } });
