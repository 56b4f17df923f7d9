// Helpers shared by the real-browser drivers of the layout editor (drive_*.mjs): start Debian's chromium through
// playwright-core, open the ComfyUI frontend served by conftest.py, and drive the editor canvas of one node with the
// mouse, in frame coordinates (0..1), whatever the zoom and device pixel ratio.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

export const NODE_ID = "L2S_LayoutEditor";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export async function launch(config) {
  const { chromium } = createRequire(`${config.playwright_dir}/`)("playwright-core");
  return chromium.launch({ executablePath: config.chromium, args: ARGS });
}

/**
 * A driver's run: reads its config (the JSON file named by the first argument), starts the browser, opens the
 * frontend (contextOptions as for openFrontend) and calls body({ browser, config, result, mark, page, d }); the
 * result (steps, errors, timings from mark(name), checks, then `fields`) goes to config.out however body ends.
 */
export async function runDriver(body, { fields = {}, contextOptions = {} } = {}) {
  const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
  const t0 = Date.now();
  const result = { steps: {}, errors: [], timings: {}, checks: {}, ...fields };
  const mark = (name) => (result.timings[name] = Date.now() - t0);

  const browser = await launch(config);
  mark("browser");
  try {
    const page = await openFrontend(browser, config, result, contextOptions);
    mark("frontend_ready");
    await body({ browser, config, result, mark, page, d: editorDriver(page) });
  } finally {
    await browser.close();
    writeFileSync(config.out, JSON.stringify(result, null, 1));
  }
}

/** A page with the frontend loaded; errors from this pack's code go to result.errors, others to other_errors. */
export async function openFrontend(browser, config, result, contextOptions = {}) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, ...contextOptions });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const ours = (text) => /lay2story|box_canvas|layout_s|story_graph|canvas_draw|editor_menu|l2s-|l2sEditor/i.test(text);
  result.other_errors = result.other_errors ?? [];
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
  return page;
}

/** Mouse and state helpers bound to the editor of the node in window.__l2sNode. */
export function editorDriver(page) {
  const d = { aspect: 1 };
  d.closeDialogs = async () => {
    for (let i = 0; i < 3 && (await page.locator(".p-dialog:visible").count()) > 0; i++) {
      await page.keyboard.press("Escape");
      await page.waitForTimeout(100);
    }
  };
  d.canvas = () => page.locator(".l2s-box-editor canvas").first();
  d.state = () => page.evaluate(() => {
    const node = window.__l2sNode;
    const editor = node.l2sEditor;
    const root = editor.root;
    return {
      json: node.widgets.find((w) => w.name === "layout_json").value,
      editor_text: editor?.getLayoutText() ?? null,
      label: root.querySelector(".l2s-frame-label")?.textContent ?? null,
      prompt: root.querySelector(".l2s-frame-prompt")?.textContent ?? null,
      status: root.querySelector(".l2s-status")?.textContent ?? null,
      editor_state: root.dataset.state ?? null,
      picker_label: root.querySelector(".l2s-picker-label")?.textContent ?? null,
      picker_value: root.querySelector(".l2s-character")?.value ?? null,
      picker_options: [...root.querySelectorAll(".l2s-character option")].map((o) => o.textContent),
      caption_placeholder: root.querySelector(".l2s-caption")?.placeholder ?? null,
      caption_disabled: root.querySelector(".l2s-caption")?.disabled ?? null,
      readout: root.querySelector(".l2s-readout")?.textContent ?? null,
      strip: [...root.querySelectorAll(".l2s-strip-frame")].map((b) => b.textContent),
      node_size: [...node.size],
      node_in_graph: app.graph.nodes.includes(node),
    };
  });
  // Screen rect of the frame inside the editor canvas, letterboxed to d.aspect, from the element's on-screen box.
  d.frameRect = async () => {
    const box = await d.canvas().boundingBox();
    let w = box.width;
    let h = w / d.aspect;
    if (h > box.height) {
      h = box.height;
      w = h * d.aspect;
    }
    return { x: box.x + (box.width - w) / 2, y: box.y + (box.height - h) / 2, w, h };
  };
  d.at = async ([u, v]) => {
    const f = await d.frameRect();
    return [f.x + u * f.w, f.y + v * f.h];
  };
  d.drag = async (from, to, { shift = false } = {}) => {
    await d.closeDialogs();
    const [ax, ay] = await d.at(from);
    const [bx, by] = await d.at(to);
    await page.mouse.move(ax, ay);
    if (shift) await page.keyboard.down("Shift");
    await page.mouse.down();
    await page.mouse.move(bx, by, { steps: 6 });
    await page.mouse.up();
    if (shift) await page.keyboard.up("Shift");
  };
  d.click = async (point, options = {}) => {
    await d.closeDialogs();
    const [x, y] = await d.at(point);
    await page.mouse.click(x, y, options);
  };
  /** RGBA of the editor canvas's backing store at frame point (u, v). */
  d.pixel = (u, v) => page.evaluate(([uu, vv, a]) => {
    const c = window.__l2sNode.l2sEditor.canvas;
    const k = c.width / c.clientWidth;
    let w = c.clientWidth;
    let h = w / a;
    if (h > c.clientHeight) {
      h = c.clientHeight;
      w = h * a;
    }
    const x = ((c.clientWidth - w) / 2 + uu * w) * k;
    const y = ((c.clientHeight - h) / 2 + vv * h) * k;
    return [...c.getContext("2d").getImageData(Math.round(x), Math.round(y), 1, 1).data];
  }, [u, v, d.aspect]);
  /** How many canvas pixels are the editor's error red (bad boxes are outlined in it). */
  d.redPixels = () => page.evaluate(() => {
    const c = window.__l2sNode.l2sEditor.canvas;
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] > 220 && data[i + 1] < 90 && data[i + 2] < 90) n++;
    return n;
  });
  /** Canvas backing size vs its on-screen size times devicePixelRatio. */
  d.sharpness = () => page.evaluate(() => {
    const c = window.__l2sNode.l2sEditor.canvas;
    const r = c.getBoundingClientRect();
    return { backing: [c.width, c.height], screen: [r.width, r.height], dpr: window.devicePixelRatio };
  });
  /** A run's frames: the SaveImage fed by the sampler reports `records` (ComfyUI's "executed" event). */
  d.showRunFrames = (records) => page.evaluate(async (r) => {
    const { api } = await import("/scripts/api.js");
    const save = app.graph.nodes.find((n) => n.type === "SaveImage");
    api.dispatchEvent(new CustomEvent("executed", { detail: { node: String(save.id), display_node: String(save.id),
      output: { images: r }, prompt_id: "test" } }));
  }, records);
  d.setJson = (text) => page.evaluate((t) => {
    window.__l2sNode.widgets.find((x) => x.name === "layout_json").value = t;
    app.canvas.setDirty(true, true);
  }, text);
  return d;
}
