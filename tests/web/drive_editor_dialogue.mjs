// Drives the layout editor of the shipped lay2story_drawn_layout workflow in the real ComfyUI frontend (Debian's
// chromium through playwright-core): a cast of Character nodes feeding the Story (the picker offers every
// character, a second box can be drawn), a frame's dialogue lines added, edited and deleted, and the papercuts of a
// real session: the status line never resizes the canvas, "copy to next frame" keeps the boxes already there and
// says so (and Ctrl+Z undoes it), a run's frames stay behind the boxes after Ctrl+Z rebuilds the node, the gesture
// hint fits the default width and the Story node's prompt box shows all its lines. Writes what it saw as JSON for
// tests/web/test_editor_dialogue_browser.py. Usage: node drive_editor_dialogue.mjs CONFIG_JSON_FILE.
import { readFileSync } from "node:fs";

import { runDriver } from "./editor_page.mjs";

await runDriver(async ({ config, result, mark, page, d }) => {
  await d.closeDialogs(); // frontend 1.27 opens a missing-nodes dialog for its default graph at start
  const snap = async (name) => {
    await page.waitForTimeout(60);
    result.steps[name] = {
      ...(await d.state()),
      dialogue: await page.evaluate(() => {
        const root = window.__l2sNode.l2sEditor.root;
        return {
          label: root.querySelector(".l2s-dialogue-label")?.textContent ?? null,
          rows: [...root.querySelectorAll(".l2s-line")].map((row) => ({
            speaker: row.querySelector(".l2s-line-speaker").value,
            speakers: [...row.querySelectorAll(".l2s-line-speaker option")].map((o) => o.value),
            style: row.querySelector(".l2s-line-style").value,
            text: row.querySelector(".l2s-line-text").value,
          })),
        };
      }),
    };
    if (config.screenshot_dir) await page.screenshot({ path: `${config.screenshot_dir}/dialogue_${name}.png` });
  };
  const refind = () => page.evaluate(() => {
    window.__l2sNode = app.graph.nodes.find((n) => n.type === "L2S_LayoutEditor");
    const node = window.__l2sNode;
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [-node.pos[0] + 90, -node.pos[1] + 60];
    app.canvas.setDirty(true, true);
  });
  const canvasRect = async () => {
    const box = await d.canvas().boundingBox();
    return [box.x, box.y, box.width, box.height].map((v) => Math.round(v * 10) / 10);
  };
  const undo = async () => { // ComfyUI's own undo, focus on the graph (outside the editor)
    await page.mouse.click(1380, 1080);
    await page.waitForTimeout(150);
    await page.keyboard.press("Control+z");
    await page.waitForTimeout(600);
    await refind();
    await page.waitForTimeout(300);
  };

  // 1. Defaults: a new Story node shows all its frame-prompt lines; a new editor's gesture hint is not cut.
  result.checks.defaults = await page.evaluate(async () => {
    app.graph.clear();
    const story = LiteGraph.createNode("L2S_Story");
    story.pos = [80, 80];
    app.graph.add(story);
    const editor = LiteGraph.createNode("L2S_LayoutEditor");
    editor.pos = [600, 80];
    app.graph.add(editor);
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    app.canvas.setDirty(true, true);
    await new Promise((r) => setTimeout(r, 700));
    const prompts = story.widgets.find((w) => w.name === "frame_prompts");
    const area = prompts.element;
    const hint = editor.l2sEditor.root.querySelector(".l2s-hint");
    const root = editor.l2sEditor.root.getBoundingClientRect();
    const h = hint.getBoundingClientRect();
    return {
      story_size: [...story.size], prompt_lines: String(prompts.value).split("\n").length,
      prompt_client: area.clientHeight, prompt_scroll: area.scrollHeight,
      editor_size: [...editor.size], hint_text: hint.textContent,
      hint_scroll: [hint.scrollWidth, hint.scrollHeight], hint_client: [hint.clientWidth, hint.clientHeight],
      hint_inside: h.left >= root.left - 0.5 && h.right <= root.right + 0.5 && h.bottom <= root.bottom + 0.5,
    };
  });

  // 2. The shipped workflow; a cast of two Character nodes (hero, then cat) feeds its Story while editing.
  const workflow = JSON.parse(readFileSync(config.workflow, "utf8"));
  await page.evaluate(async (wf) => {
    await app.loadGraphData(wf);
  }, workflow);
  await refind();
  await d.closeDialogs();
  await d.canvas().waitFor({ state: "visible" });
  await page.waitForTimeout(400);
  await snap("loaded");
  result.checks.loaded_story_prompts = await page.evaluate(() => { // saved at [320, 242]: grown on load
    const story = app.graph.nodes.find((n) => n.type === "L2S_Story");
    const area = story.widgets.find((w) => w.name === "frame_prompts").element;
    return { size: [...story.size], client: area.clientHeight, scroll: area.scrollHeight };
  });
  await d.drag([0.55, 0.1], [0.9, 0.4]); // one character: refused (the papercut this fixes)
  await snap("one_character_refused");
  await page.evaluate(() => {
    const story = app.graph.nodes.find((n) => n.type === "L2S_Story");
    const hero = LiteGraph.createNode("L2S_Character");
    hero.pos = [story.pos[0] - 420, story.pos[1]];
    app.graph.add(hero);
    hero.widgets.find((w) => w.name === "character_id").value = "hero";
    hero.widgets.find((w) => w.name === "identity").value = "a red striped star";
    const cat = LiteGraph.createNode("L2S_Character");
    cat.pos = [story.pos[0] - 420, story.pos[1] + 380];
    app.graph.add(cat);
    cat.widgets.find((w) => w.name === "character_id").value = "cat";
    cat.widgets.find((w) => w.name === "identity").value = "a blue dotted circle";
    hero.connect(0, cat, cat.inputs.findIndex((i) => i.name === "cast"));
    cat.connect(0, story, story.inputs.findIndex((i) => i.name === "cast"));
    app.canvas.setDirty(true, true);
  });
  await refind();
  await page.waitForTimeout(400);
  await snap("cast_connected");
  await d.drag([0.55, 0.1], [0.9, 0.4]); // a second box: takes the free character, cat
  await snap("second_box");

  // 3. Dialogue: with the cat box selected, "+ line" adds a line said by cat; type it, make it a shout; a second
  // line turned narration; a third line added and deleted again.
  await page.click(".l2s-dialogue-add");
  await page.keyboard.type("Look, a kite!");
  await snap("line_typed");
  await page.selectOption(".l2s-line[data-line='0'] .l2s-line-style", "shout");
  await d.click([0.95, 0.97]); // empty space: deselect (the next line is said by nobody in particular)
  await page.click(".l2s-dialogue-add");
  await page.keyboard.type("Far away, a storm.");
  await page.selectOption(".l2s-line[data-line='1'] .l2s-line-speaker", "hero");
  await page.selectOption(".l2s-line[data-line='1'] .l2s-line-speaker", "");
  await snap("two_lines");
  await page.fill(".l2s-line[data-line='1'] .l2s-line-text", ""); // empty text: refused, the JSON keeps the line
  await snap("emptied");
  await page.fill(".l2s-line[data-line='1'] .l2s-line-text", "Far away, a storm brewed.");
  await page.click(".l2s-dialogue-add");
  await page.keyboard.type("to be deleted");
  await page.click(".l2s-line[data-line='2'] .l2s-line-delete");
  await snap("lines_edited");
  await page.click(".l2s-nav button[title^='Next frame']");
  await snap("frame2_lines");
  await page.click(".l2s-nav button[title^='Previous frame']");
  result.checks.prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);

  // 4. The status line never resizes the canvas: the same rect with no message, a long one and an error.
  await d.click([0.95, 0.97]);
  result.checks.rect_quiet = await canvasRect();
  result.checks.status_quiet = (await d.state()).status;
  await d.drag([0.02, 0.02], [0.2, 0.2]); // a third box: every character has one -> a long message
  result.checks.rect_message = await canvasRect();
  result.checks.status_message = (await d.state()).status;
  const good = (await d.state()).json;
  const ghost = JSON.parse(good);
  ghost.frames[0].dialogue.push({ text: "Boo", speaker: "ghost", style: "speech" });
  ghost.characters.push("ghost");
  await d.setJson(JSON.stringify(ghost));
  await page.waitForFunction(() => window.__l2sNode.l2sEditor.root.dataset.state === "error");
  result.checks.rect_error = await canvasRect();
  await snap("bad_speaker");
  await d.setJson(good);
  await page.waitForFunction(() => window.__l2sNode.l2sEditor.root.dataset.state === "ok");

  // 5. A run's frames behind the boxes (the SaveImage fed by the sampler reports them).
  await d.showRunFrames(config.run_records);
  const imagesLoaded = () => page.waitForFunction(() => {
    const images = [...window.__l2sNode.l2sEditor.images.values()];
    return images.length >= 2 && images.every((img) => img.complete && img.naturalWidth > 0);
  });
  await imagesLoaded();
  await page.evaluate(() => window.__l2sNode.l2sEditor.redraw());
  result.pixels.run_before_undo = await d.pixel(0.97, 0.03);

  // 6. Copy to next frame: hero already has a box in frame 2 (kept, said so); cat is copied; Ctrl+Z undoes it.
  const menu = async (point, action) => {
    await d.click(point, { button: "right" });
    await page.locator(".l2s-menu").waitFor({ state: "visible" });
    await page.click(`.l2s-menu-item[data-action='${action}']`);
  };
  await snap("before_copy");
  await menu([0.28, 0.65], "copy-next"); // the hero box
  await snap("copied_hero");
  result.checks.rect_copy_message = await canvasRect();
  await menu([0.7, 0.25], "copy-next"); // the cat box
  await snap("copied_cat");
  await undo();
  await snap("copy_undone");
  result.checks.images_after_undo = await page.evaluate(() => window.__l2sNode.l2sEditor.images.size);

  // 7. The rebuilt node still shows the run's frames behind the boxes.
  await imagesLoaded();
  await page.evaluate(() => window.__l2sNode.l2sEditor.redraw());
  result.pixels.run_after_undo = await d.pixel(0.97, 0.03);
  result.checks.backgrounds_after_undo = await page.evaluate(() => window.__l2sNode.l2sEditor.backgrounds);
  mark("done");
}, { fields: { pixels: {} }, contextOptions: { viewport: { width: 1400, height: 1100 } } });
