// ComfyUI extension of the Lay2Story pack: puts the box editor (box_canvas.js) on the L2S_LayoutEditor node.
// The node's `layout_json` STRING widget stays the state (hidden, still saved in workflows and API prompts); the
// canvas is a DOM widget kept out of both (`serialize: false` in its options and on the widget), added after all
// value widgets so saved widget values keep their positions. Hooks are chained, never overwritten.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { BoxCanvasEditor } from "./box_canvas.js";

const NODE_ID = "L2S_LayoutEditor";
const JSON_WIDGET = "layout_json";
const EDITOR_WIDGET = "layout_canvas";
const EDITOR_MIN_HEIGHT = 340;
const NODE_MIN_WIDTH = 420;

/** Replaces obj[name] by a function that calls the previous one first, then `after`; returns the previous result. */
function chain(obj, name, after) {
  const previous = obj[name];
  obj[name] = function (...args) {
    const result = previous?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

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
  // script, a hand edit) is picked up on the next draw; a bad text shows an error line and stays as it is.
  const syncFromWidget = () => {
    const text = readJson();
    if (text !== editor.getLayoutText()) editor.setLayoutText(text);
  };
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

  const [width, height] = node.size;
  const wanted = node.computeSize?.() ?? [NODE_MIN_WIDTH, EDITOR_MIN_HEIGHT];
  node.setSize([Math.max(width, NODE_MIN_WIDTH, wanted[0]), Math.max(height, wanted[1])]);
}

app.registerExtension({
  name: "lay2story.LayoutEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    const proto = nodeType.prototype;
    chain(proto, "onNodeCreated", function () {
      attachEditor(this);
    });
    chain(proto, "onConfigure", function () {
      // Widget values are restored before onConfigure: load them into the canvas now, not at the next draw.
      const jsonWidget = this.widgets?.find((w) => w.name === JSON_WIDGET);
      if (this.l2sEditor && jsonWidget) this.l2sEditor.setLayoutText(String(jsonWidget.value ?? ""));
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
      if (Array.isArray(size) && size.length === 2 && size[0] > 0 && size[1] > 0) editor.setAspect(size[0] / size[1]);
      if (Array.isArray(output.l2s_backgrounds)) editor.setBackgrounds(output.l2s_backgrounds.map(imageURL));
      if (Array.isArray(output.l2s_characters)) editor.addCharacters(output.l2s_characters);
    });
  },
});
