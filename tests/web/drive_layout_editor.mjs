// Drives the layout editor in the real ComfyUI frontend with Debian's chromium through playwright-core, and writes
// what it saw as JSON for tests/web/test_layout_editor_browser.py to check (the Python side parses the layout texts
// with Layout.from_json). Usage: node drive_layout_editor.mjs CONFIG_JSON_FILE (see the Python test for its keys).
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { chromium } = createRequire(`${config.playwright_dir}/`)("playwright-core");
const NODE_ID = "L2S_LayoutEditor";
const t0 = Date.now();
const result = { steps: {}, errors: [], timings: {}, checks: {} };
const mark = (name) => (result.timings[name] = Date.now() - t0);

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
mark("browser");
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(15000);
  // Errors from this pack's code fail the test; others (the frontend against a stub backend) are only reported.
  const ours = (text) => /lay2story|box_canvas\.js|l2s-|l2sEditor/i.test(text);
  result.other_errors = [];
  page.on("pageerror", (err) => {
    const text = `pageerror: ${err.message}\n${err.stack ?? ""}`;
    (ours(text) ? result.errors : result.other_errors).push(text.slice(0, 1500));
  });
  page.on("console", (msg) => {
    const text = `console: ${msg.text()} (${msg.location()?.url ?? ""})`;
    if (msg.type() === "error" && ours(text)) result.errors.push(text.slice(0, 1500));
  });

  await page.goto(config.url);
  await page.waitForFunction((id) => window.app?.graph && window.LiteGraph?.registered_node_types?.[id], NODE_ID,
    { timeout: 30000 });
  mark("frontend_ready");

  // One editor node on an empty graph, unzoomed, big enough to draw on.
  await page.evaluate((id) => {
    app.graph.clear();
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    const node = LiteGraph.createNode(id);
    node.pos = [120, 140];
    app.graph.add(node);
    node.setSize([560, 620]);
    app.canvas.setDirty(true, true);
    window.__l2sNode = node;
  }, NODE_ID);
  await page.locator(".l2s-box-editor canvas").waitFor({ state: "visible" });
  await page.waitForTimeout(300);

  const closeDialogs = async () => {
    for (let i = 0; i < 3 && (await page.locator(".p-dialog:visible").count()) > 0; i++) {
      await page.keyboard.press("Escape");
      await page.waitForTimeout(100);
    }
  };
  const state = () => page.evaluate(() => {
    const node = window.__l2sNode;
    const editor = node.l2sEditor;
    return {
      json: node.widgets.find((w) => w.name === "layout_json").value,
      editor_text: editor?.getLayoutText() ?? null,
      label: document.querySelector(".l2s-frame-label")?.textContent ?? null,
      status: document.querySelector(".l2s-status")?.textContent ?? null,
      editor_state: document.querySelector(".l2s-box-editor")?.dataset.state ?? null,
      node_in_graph: app.graph.nodes.includes(node),
    };
  });
  const snap = async (name) => {
    await page.waitForTimeout(50);
    result.steps[name] = await state();
    if (config.screenshot_dir) await page.screenshot({ path: `${config.screenshot_dir}/${name}.png` });
  };
  // Screen rect of the frame inside the editor canvas, letterboxed to `aspect`, computed from the element's box.
  const frameRect = async (aspect) => {
    const box = await page.locator(".l2s-box-editor canvas").boundingBox();
    let w = box.width;
    let h = w / aspect;
    if (h > box.height) {
      h = box.height;
      w = h * aspect;
    }
    return { x: box.x + (box.width - w) / 2, y: box.y + (box.height - h) / 2, w, h };
  };
  let aspect = 1;
  const at = async ([u, v]) => {
    const f = await frameRect(aspect);
    return [f.x + u * f.w, f.y + v * f.h];
  };
  const drag = async (from, to) => {
    await closeDialogs();
    const [ax, ay] = await at(from);
    const [bx, by] = await at(to);
    await page.mouse.move(ax, ay);
    await page.mouse.down();
    await page.mouse.move(bx, by, { steps: 6 });
    await page.mouse.up();
  };
  const click = async (point) => {
    await closeDialogs();
    const [x, y] = await at(point);
    await page.mouse.click(x, y);
  };
  // RGBA of the editor canvas at frame point (u, v) (aspect as drawn).
  const pixel = (u, v) => page.evaluate(([uu, vv, a]) => {
    const c = window.__l2sNode.l2sEditor.canvas;
    const dpr = c.width / c.clientWidth;
    let w = c.clientWidth;
    let h = w / a;
    if (h > c.clientHeight) {
      h = c.clientHeight;
      w = h * a;
    }
    const x = ((c.clientWidth - w) / 2 + uu * w) * dpr;
    const y = ((c.clientHeight - h) / 2 + vv * h) * dpr;
    return [...c.getContext("2d").getImageData(Math.round(x), Math.round(y), 1, 1).data];
  }, [u, v, aspect]);

  await snap("created");
  await drag([0.1, 0.1], [0.4, 0.5]);
  await snap("drawn");
  await drag([0.25, 0.3], [0.45, 0.4]); // grab inside: move by (+0.2, +0.1)
  await snap("moved");
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

  await page.click(".l2s-nav button[title='Next frame']");
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
  await page.click(".l2s-nav button[title='Previous frame']");
  await page.click(".l2s-nav button[title='Previous frame']");
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
  await page.click(".l2s-nav button[title='Next frame']");
  await page.waitForTimeout(100);
  result.pixels.frame2_hero_box = await pixel(0.7, 0.35);
  result.pixels.frame2_empty = await pixel(0.2, 0.8);
  await snap("reloaded_frame2");
  await page.click(".l2s-nav button[title='Previous frame']");
  mark("reload_done");

  // A run's UI output: background images (shown under the boxes, setting the aspect) and the story's characters.
  if (config.background) {
    await page.evaluate((bg) => {
      window.__l2sNode.onExecuted({ l2s_backgrounds: [bg.record], l2s_frame_size: bg.size, l2s_characters: ["hero", "wizard"] });
    }, config.background);
    await page.waitForFunction(() => {
      const images = [...window.__l2sNode.l2sEditor.images.values()];
      return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
    });
    aspect = config.background.size[0] / config.background.size[1];
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
} finally {
  await browser.close();
  writeFileSync(config.out, JSON.stringify(result, null, 1));
}
