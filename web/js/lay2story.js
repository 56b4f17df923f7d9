// ComfyUI extension of the Lay2Story pack: puts the box editor (box_canvas.js) on the L2S_LayoutEditor node.
// The node's `layout_json` STRING widget stays the state (hidden, still saved in workflows and API prompts); the
// canvas is a DOM widget kept out of both (`serialize: false` in its options and on the widget), added after all
// value widgets so saved widget values keep their positions. Hooks are chained, never overwritten.
// While editing, the editor reads the connected story (characters, frame prompts, size, dialogue) from the graph
// (story_graph.js), and shows the frames of the last run of a sampler fed by it behind the boxes. What a run told
// an editor (backgrounds, frame size, the run's story) is remembered per workflow and node id on the app, so an undo
// or a reload of the graph (which rebuilds the node) keeps showing it.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { chain } from "./node_hooks.js";
import { BoxCanvasEditor } from "./box_canvas.js";
import { readStory, runImageSinks } from "./story_graph.js";

const NODE_ID = "L2S_LayoutEditor";
const PREVIEW_ID = "L2S_LayoutPreview";
const JSON_WIDGET = "layout_json";
const EDITOR_WIDGET = "layout_canvas";
const EDITOR_MIN_HEIGHT = 600;
const NODE_MIN_WIDTH = 540;
const PREVIEW_MIN_SIZE = [420, 480];
const SYNC_INTERVAL_MS = 250;
const RUN_MEMORY_SIZE = 64; // editors whose last run is remembered (oldest forgotten first)

function hideWidget(widget) {
  widget.hidden = true; // frontends that know `hidden` skip drawing and layout of the widget
  widget.computeSize = () => [0, -4]; // older frontends: take no room
  if (widget.element) widget.element.style.display = "none"; // a multiline STRING is itself a DOM widget
}

function imageURL(record) {
  const params = new URLSearchParams({
    filename: record.filename ?? "",
    subfolder: record.subfolder ?? "",
    type: record.type ?? "temp",
  });
  return api.apiURL(`/view?${params}`);
}

/** Where the runs seen by this page are remembered: a Map on the app (not in the workflow, not in undo states). */
function runMemory() {
  app.l2sRunMemory = app.l2sRunMemory instanceof Map ? app.l2sRunMemory : new Map();
  return app.l2sRunMemory;
}

function runKey(node) {
  const workflow = app.extensionManager?.workflow?.activeWorkflow?.path ?? "";
  return node.id === undefined || node.id === null || node.id === -1 ? null : `${workflow}\u0000${node.id}`;
}

/** Merges `patch` ({backgrounds: {wired, run}, frameSize, story}) into what is remembered of `node`'s last run. */
function rememberRun(node, patch) {
  const key = runKey(node);
  if (key === null) return;
  const memory = runMemory();
  const entry = { ...(memory.get(key) ?? {}), ...patch };
  if (patch.backgrounds) entry.backgrounds = { ...(memory.get(key)?.backgrounds ?? {}), ...patch.backgrounds };
  memory.delete(key);
  memory.set(key, entry);
  while (memory.size > RUN_MEMORY_SIZE) memory.delete(memory.keys().next().value);
}

/** Shows a rebuilt node's last run again (frame size, backgrounds, the run's story). */
function recallRun(node) {
  const entry = runMemory().get(runKey(node));
  const editor = node.l2sEditor;
  if (!entry || !editor) return;
  if (entry.frameSize) editor.setFrameSize(entry.frameSize[0], entry.frameSize[1]);
  for (const [kind, urls] of Object.entries(entry.backgrounds ?? {})) editor.setBackgrounds(urls, kind);
  if (entry.story) node.l2sRunStory = entry.story;
  node.l2sSync?.();
}

/** Grows the node to at least `min` (and what its widgets need); never shrinks it. */
function ensureMinSize(node, min) {
  const [width, height] = node.size;
  const wanted = node.computeSize?.() ?? min;
  const size = [Math.max(width, min[0], wanted[0]), Math.max(height, min[1], wanted[1])];
  if (size[0] !== width || size[1] !== height) node.setSize(size);
}

function attachEditor(node) {
  const jsonWidget = node.widgets?.find((w) => w.name === JSON_WIDGET);
  if (!jsonWidget || node.l2sEditor) return;
  hideWidget(jsonWidget);

  const readJson = () => (typeof jsonWidget.value === "string" ? jsonWidget.value : "");
  const writeJson = (text) => {
    if (readJson() === text) return;
    jsonWidget.value = text;
    node.setDirtyCanvas?.(true, true);
  };
  const container = document.createElement("div");
  const editor = new BoxCanvasEditor(container, { onChange: writeJson, onText: writeJson });
  node.l2sEditor = editor;

  // Widget -> canvas: any change of the JSON widget that did not come from the canvas (workflow load, undo, a
  // script, a hand edit) is picked up on the next draw; a bad text shows an error line and stays as it is. The
  // connected story is re-read on each draw too (cheap: unchanged stories are ignored by the editor).
  const syncFromWidget = () => {
    const text = readJson();
    if (text !== editor.getLayoutText()) editor.setLayoutText(text);
    if (node.graph) editor.setStory(readStory(node) ?? node.l2sRunStory ?? null);
    editor.checkSize();
  };
  node.l2sSync = syncFromWidget;
  const domWidget = node.addDOMWidget(EDITOR_WIDGET, "l2s_layout_canvas", container, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => EDITOR_MIN_HEIGHT,
    onDraw: syncFromWidget,
  });
  domWidget.serialize = false;
  editor.setLayoutText(readJson());
  jsonWidget.callback = ((previous) =>
    function (...args) {
      const result = previous?.apply(this, args);
      syncFromWidget();
      return result;
    })(jsonWidget.callback);
  // Not every renderer calls onDraw (the Vue node renderer draws nodes itself): a slow poll keeps the story and
  // the canvas's sharpness current there too (the work is skipped while the editor is not on the page).
  node.l2sTimer = setInterval(() => {
    if (container.isConnected) syncFromWidget();
  }, SYNC_INTERVAL_MS);
  ensureMinSize(node, [NODE_MIN_WIDTH, EDITOR_MIN_HEIGHT]);
}

/** A run's images (SaveImage / PreviewImage fed by a sampler downstream of an editor) become its backgrounds. */
function onExecutedEvent(event) {
  const detail = event?.detail;
  const images = detail?.output?.images;
  if (!detail || !Array.isArray(images) || !images.length || !app.graph) return;
  const id = String(detail.display_node ?? detail.node);
  for (const node of app.graph.nodes ?? []) {
    if (node.type !== NODE_ID || !node.l2sEditor) continue;
    if (runImageSinks(node).some((sink) => String(sink.id) === id)) {
      const urls = images.map(imageURL);
      node.l2sEditor.setBackgrounds(urls, "run");
      rememberRun(node, { backgrounds: { run: urls } });
    }
  }
}

app.registerExtension({
  name: "lay2story.LayoutEditor",
  setup() {
    api.addEventListener("executed", onExecutedEvent);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const proto = nodeType.prototype;
    if (nodeData?.name === PREVIEW_ID) {
      // The preview's frames (>= 256 px each) need room; a node saved smaller grows on load.
      chain(proto, "onNodeCreated", function () {
        ensureMinSize(this, PREVIEW_MIN_SIZE);
      });
      chain(proto, "onConfigure", function () {
        ensureMinSize(this, PREVIEW_MIN_SIZE);
      });
      return;
    }
    if (nodeData?.name !== NODE_ID) return;
    chain(proto, "onNodeCreated", function () {
      attachEditor(this);
    });
    chain(proto, "onConfigure", function () {
      // Widget values are restored before onConfigure: load them into the canvas now, not at the next draw; a
      // workflow saved with a smaller node gets the minimum size.
      const jsonWidget = this.widgets?.find((w) => w.name === JSON_WIDGET);
      if (this.l2sEditor && jsonWidget) this.l2sEditor.setLayoutText(String(jsonWidget.value ?? ""));
      ensureMinSize(this, [NODE_MIN_WIDTH, EDITOR_MIN_HEIGHT]);
      recallRun(this); // an undo or reload rebuilt the node: the last run's frames stay behind the boxes
    });
    chain(proto, "onRemoved", function () {
      clearInterval(this.l2sTimer);
    });
    chain(proto, "onConnectionsChange", function () {
      this.l2sRunStory = null; // a run's story is stale once the inputs change
      this.l2sSync?.();
    });
    chain(proto, "onSerialize", function (data) {
      // Saved values must be exactly the value widgets (the JSON text), never the canvas: a frontend that ignores
      // `widget.serialize` would otherwise save one value too many and shift them on reload.
      const values = this.widgets?.filter((w) => w.serialize !== false && w.options?.serialize !== false);
      if (!data || !values) return;
      if (Array.isArray(data.widgets_values) && data.widgets_values.length !== values.length) {
        data.widgets_values = values.map((w) => w.value);
      }
      if (data.widgets_values_named) delete data.widgets_values_named[EDITOR_WIDGET];
    });
    chain(proto, "onExecuted", function (output) {
      const editor = this.l2sEditor;
      if (!editor || !output) return;
      const size = output.l2s_frame_size;
      if (Array.isArray(size) && size.length === 2 && size[0] > 0 && size[1] > 0) {
        editor.setFrameSize(size[0], size[1]);
        rememberRun(this, { frameSize: [size[0], size[1]] });
      }
      if (Array.isArray(output.l2s_backgrounds)) {
        const urls = output.l2s_backgrounds.map(imageURL);
        editor.setBackgrounds(urls, "wired");
        rememberRun(this, { backgrounds: { wired: urls } });
      }
      if (Array.isArray(output.l2s_characters)) {
        // The story the run used; the graph's own story (read while editing) wins when it can be read.
        this.l2sRunStory = {
          characters: output.l2s_characters,
          prompts: Array.isArray(output.l2s_prompts) ? output.l2s_prompts : null,
          width: size?.[0], height: size?.[1],
        };
        if (Array.isArray(output.l2s_dialogue)) this.l2sRunStory.dialogue = output.l2s_dialogue;
        rememberRun(this, { story: this.l2sRunStory });
        this.l2sSync?.();
      }
    });
  },
});
