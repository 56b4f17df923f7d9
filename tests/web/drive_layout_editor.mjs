// Drives the layout editor in the real ComfyUI frontend with Debian's chromium through playwright-core, and writes
// what it saw as JSON for tests/web/test_layout_editor_browser.py to check (the Python side parses the layout texts
// with Layout.from_json). Usage: node drive_layout_editor.mjs CONFIG_JSON_FILE (see the Python test for its keys).
import { NODE_ID, runDriver } from "./editor_page.mjs";

await runDriver(async ({ config, result, mark, page, d }) => {
  // One editor node on an empty graph, unzoomed, big enough to draw on.
  await page.evaluate((id) => {
    app.graph.clear();
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    const node = LiteGraph.createNode(id);
    node.pos = [120, 140];
    app.graph.add(node);
    node.setSize([560, 780]);
    app.canvas.setDirty(true, true);
    window.__l2sNode = node;
  }, NODE_ID);
  await page.locator(".l2s-box-editor canvas").waitFor({ state: "visible" });
  await page.waitForTimeout(300);

  const { state, drag, click, pixel } = d;
  const snap = async (name) => {
    await page.waitForTimeout(50);
    result.steps[name] = await state();
    if (config.screenshot_dir) await page.screenshot({ path: `${config.screenshot_dir}/${name}.png` });
  };

  await snap("created");
  await drag([0.1, 0.1], [0.4, 0.5]);
  await snap("drawn");
  await drag([0.25, 0.3], [0.45, 0.4]); // grab inside: move by (+0.2, +0.1)
  await snap("moved");
  // ComfyUI's own undo (focus on the graph, outside the editor): back to before the move, then redo it by hand.
  await page.mouse.click(1300, 900);
  await page.waitForTimeout(150);
  await page.keyboard.press("Control+z");
  await page.waitForTimeout(400);
  await page.evaluate(() => { // undo may reload the graph (new node objects) and its view
    window.__l2sNode = app.graph.nodes.find((n) => n.type === "L2S_LayoutEditor");
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    app.canvas.setDirty(true, true);
  });
  await page.waitForTimeout(300);
  await snap("undone");
  await drag([0.25, 0.3], [0.45, 0.4]);
  await snap("moved_again");
  await drag([0.6, 0.6], [0.8, 0.9]); // grab the bottom-right corner: resize
  await snap("resized");

  await click([0.95, 0.05]); // empty space: deselect
  await page.selectOption(".l2s-character", { label: "+ new character\u2026" });
  await page.fill(".l2s-new-character", "villain");
  await page.press(".l2s-new-character", "Enter");
  await snap("character_added");
  await drag([0.02, 0.55], [0.25, 0.95]); // new box: gets the picked character
  await snap("second_box");

  await click([0.5, 0.4]); // select the hero box (inside it, away from the villain box)
  await page.keyboard.press("Delete");
  await snap("deleted");

  await page.click(".l2s-nav button[title^='Next frame']");
  await drag([0.5, 0.1], [0.9, 0.6]);
  await snap("frame2_drawn");
  await page.selectOption(".l2s-character", "hero");
  await snap("character_picked");
  await page.click(".l2s-caption");
  await page.keyboard.type("walking in the rain");
  await snap("captioned");

  await page.click(".l2s-nav button[title='Add an empty frame after this one']");
  await snap("frame_added");
  await drag([0.3, 0.3], [0.6, 0.6]);
  await snap("frame_added_drawn");
  await page.click(".l2s-props button[title^='Delete the selected box']");
  await snap("button_deleted");
  await page.click(".l2s-nav button[title='Remove this frame']");
  await snap("frame_removed");
  await page.click(".l2s-nav button[title^='Previous frame']");
  await page.click(".l2s-nav button[title^='Previous frame']");
  await snap("back_to_first");
  mark("edits_done");

  // What a run would send, and what a saved workflow holds.
  result.prompt = await page.evaluate(async () => {
    const node = window.__l2sNode;
    const p = await app.graphToPrompt();
    const saved = p.workflow?.nodes?.find((n) => n.type === node.type);
    return { inputs: p.output[String(node.id)]?.inputs ?? null, workflow_widgets_values: saved?.widgets_values ?? null,
      workflow_keys: Object.keys(p.workflow ?? {}), output_keys: Object.keys(p.output ?? {}) };
  });
  await page.evaluate(() => app.queuePrompt(0, 1));
  await page.waitForTimeout(300);
  const saved = await page.evaluate(() => JSON.parse(JSON.stringify(app.graph.serialize())));
  result.saved_widgets_values = saved.nodes.find((n) => n.type === NODE_ID)?.widgets_values ?? null;
  mark("prompt_done");

  // Hand-edited JSON: the canvas reports the error, keeps the text, and recovers when the text is fixed.
  const good = (await state()).json;
  await page.click(".l2s-nav button[title^='Show / hide the layout JSON']");
  result.checks.json_view = await page.evaluate(() => {
    const area = document.querySelector(".l2s-json");
    return { lines: area.value.split("\n").length, resize: area.style.resize, height: area.clientHeight,
      text: area.value };
  });
  await page.fill(".l2s-json", "{broken");
  await snap("bad_typed");
  result.checks.canvas_present_on_error = await page.locator(".l2s-box-editor canvas").isVisible();
  await page.fill(".l2s-json", good);
  await snap("good_typed");
  await page.click(".l2s-nav button[title^='Show / hide the layout JSON']");
  await page.evaluate(() => {
    const w = window.__l2sNode.widgets.find((x) => x.name === "layout_json");
    w.value = JSON.stringify({ version: 1, frames: [{ subjects: [{ character: "a", box: [0.5, 0, 0.2, 1] }] }] });
    app.canvas.setDirty(true, true);
  });
  await page.waitForFunction(() => document.querySelector(".l2s-box-editor")?.dataset.state === "error");
  await snap("bad_widget_value");
  result.checks.bad_red_pixels = await d.redPixels(); // the bad box is outlined in red
  await page.evaluate((text) => {
    window.__l2sNode.widgets.find((x) => x.name === "layout_json").value = text;
    app.canvas.setDirty(true, true);
  }, good);
  await page.waitForFunction(() => document.querySelector(".l2s-box-editor")?.dataset.state === "ok");

  // Save, reload through loadGraphData, and check the boxes come back (state and pixels).
  await page.evaluate(async (workflow) => {
    await app.loadGraphData(workflow);
    window.__l2sNode = app.graph.nodes.find((n) => n.type === "L2S_LayoutEditor");
    app.canvas.setDirty(true, true);
  }, saved);
  await page.locator(".l2s-box-editor canvas").waitFor({ state: "visible" });
  await page.waitForTimeout(300);
  await snap("reloaded");
  result.checks.reloaded_node_count = await page.evaluate(
    () => app.graph.nodes.filter((n) => n.type === "L2S_LayoutEditor").length);
  result.checks.reloaded_dom_widgets = await page.evaluate(() => document.querySelectorAll(".l2s-box-editor").length);
  result.pixels = {
    frame1_villain_box: await pixel(0.13, 0.75),
    frame1_empty: await pixel(0.6, 0.3),
  };
  await page.click(".l2s-nav button[title^='Next frame']");
  await page.waitForTimeout(100);
  result.pixels.frame2_hero_box = await pixel(0.7, 0.35);
  result.pixels.frame2_empty = await pixel(0.2, 0.8);
  await snap("reloaded_frame2");
  await page.click(".l2s-nav button[title^='Previous frame']");
  mark("reload_done");

  // A run's UI output: background images (shown under the boxes, setting the aspect) and the story's characters.
  if (config.background) {
    await page.evaluate((bg) => {
      window.__l2sNode.onExecuted({ l2s_backgrounds: [bg.record], l2s_frame_size: bg.size, l2s_characters: ["hero", "villain", "wizard"] });
    }, config.background);
    await page.waitForFunction(() => {
      const images = [...window.__l2sNode.l2sEditor.images.values()];
      return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
    });
    d.aspect = config.background.size[0] / config.background.size[1];
    await page.waitForTimeout(100);
    await page.evaluate(() => window.__l2sNode.l2sEditor.redraw());
    result.pixels.background_left = await pixel(0.1, 0.3);
    result.pixels.background_right = await pixel(0.9, 0.3);
    result.pixels.letterbox = await pixel(0.5, -0.02);
    await snap("executed");
    await drag([0.55, 0.1], [0.95, 0.45]); // drawing still maps correctly with the new aspect
    await snap("drawn_on_background");
  }
  mark("done");
});
