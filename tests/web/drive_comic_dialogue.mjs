// Edits a dialogue line in the layout editor in the real ComfyUI frontend (Debian's chromium through
// playwright-core), queues the prompt (the test's stand-in server runs it with the pack's nodes), shows the run's
// outputs the way ComfyUI's websocket would (an "executed" event per node from /api/history) and reads back the
// comic page the Preview Image node shows, pixel by pixel. Writes what it saw as JSON for
// tests/web/test_comic_dialogue_browser.py. Usage: node drive_comic_dialogue.mjs CONFIG_JSON_FILE.
import { runDriver } from "./editor_page.mjs";

await runDriver(async ({ config, result, mark, page, d }) => {
  await d.closeDialogs(); // frontend 1.27 opens a missing-nodes dialog for its default graph at start
  const lines = () => page.evaluate(() => [...window.__l2sNode.l2sEditor.root.querySelectorAll(".l2s-line")].map((row) => ({
    speaker: row.querySelector(".l2s-line-speaker").value, style: row.querySelector(".l2s-line-style").value,
    text: row.querySelector(".l2s-line-text").value })));

  // Story from JSON (with a line in frame 1) -> Layout Editor -> Layout Preview (the frames) -> Comic Page -> Preview.
  await page.evaluate(({ storyJson, layoutJson }) => {
    app.graph.clear();
    const add = (type, pos) => {
      const node = LiteGraph.createNode(type);
      node.pos = pos;
      app.graph.add(node);
      return node;
    };
    const story = add("L2S_StoryFromJSON", [40, 780]);
    story.widgets.find((w) => w.name === "story_json").value = storyJson;
    const editor = add("L2S_LayoutEditor", [40, 40]);
    editor.widgets.find((w) => w.name === "layout_json").value = layoutJson;
    const frames = add("L2S_LayoutPreview", [640, 620]);
    const comic = add("L2S_ComicPage", [1120, 620]);
    comic.widgets.find((w) => w.name === "layout").value = "strip";
    const shown = add("PreviewImage", [640, 40]); // on screen: the frontend loads a preview's images when drawn
    shown.setSize([680, 520]);
    story.connect(0, editor, editor.inputs.findIndex((i) => i.name === "story"));
    editor.connect(1, frames, frames.inputs.findIndex((i) => i.name === "story"));
    editor.connect(1, comic, comic.inputs.findIndex((i) => i.name === "story"));
    frames.connect(0, comic, comic.inputs.findIndex((i) => i.name === "images"));
    comic.connect(0, shown, 0);
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [20, 20];
    app.canvas.setDirty(true, true);
    window.__l2sNode = editor;
    window.__l2sShown = shown;
  }, { storyJson: JSON.stringify(config.story), layoutJson: JSON.stringify(config.layout) });
  await d.canvas().waitFor({ state: "visible" });
  await page.waitForTimeout(400);
  result.steps.story_lines = await lines(); // the story's line, shown before any edit

  // The edit: the line's text, typed into the editor.
  await page.fill(".l2s-line[data-line='0'] .l2s-line-text", config.edited_text);
  await page.waitForTimeout(100);
  result.steps.edited = { ...(await d.state()), lines: await lines() };

  // Queue it; the server runs it; show its outputs as the websocket would, and wait for the preview's image.
  await page.evaluate(() => {
    app.queuePrompt(0, 1); // not awaited: without a websocket, newer frontends wait for queue news that never come
  });
  let entry = null;
  for (let i = 0; i < 240 && !entry; i++) { // a client polling /api/history, as scripts do
    entry = await page.evaluate(async () => {
      const history = await (await fetch("/api/history")).json();
      const done = Object.entries(history).find(([, h]) => h.status?.completed || h.status?.status_str === "error");
      return done ? { id: done[0], ...done[1] } : null;
    });
    if (!entry) await page.waitForTimeout(250);
  }
  if (!entry) throw new Error("the queued prompt never finished (no /api/history entry)");
  result.checks.status = entry.status;
  await page.evaluate(async ({ id, outputs }) => {
    const { api } = await import("/scripts/api.js");
    for (const [node, output] of Object.entries(outputs)) {
      api.dispatchEvent(new CustomEvent("executed", { detail: { node, display_node: node, output, prompt_id: id } }));
    }
  }, entry);
  await page.waitForFunction(() => {
    app.canvas.setDirty(true, true); // the preview loads its images when the canvas draws it
    const img = window.__l2sShown.imgs?.[0];
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 20000, polling: 200 });
  await page.waitForTimeout(200);
  result.checks.shown = await page.evaluate(() => {
    const img = window.__l2sShown.imgs[0];
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    c.getContext("2d").drawImage(img, 0, 0);
    return { src: img.src, size: [c.width, c.height], png: c.toDataURL("image/png") };
  });
  if (config.screenshot_dir) await page.screenshot({ path: `${config.screenshot_dir}/comic_dialogue.png` });
  mark("done");
}, { contextOptions: { viewport: { width: 1400, height: 1100 } } });
