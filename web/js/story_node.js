// ComfyUI extension of the Lay2Story pack: the Story node's frame-prompt box (one frame per line) asks the node for
// the height of its lines, at least 4 (the default story) and at most 8, so every default line shows without
// scrolling at the node's default size, and a workflow saved with a smaller node grows on load. Hooks are chained.
import { app } from "../../../scripts/app.js";
import { chain } from "./node_hooks.js";

const NODE_ID = "L2S_Story";
const PROMPTS_WIDGET = "frame_prompts";
const MIN_LINES = 4;
const MAX_LINES = 8;
const FALLBACK = { fontPx: 10, lineFactor: 1.2, padPx: 4, marginPx: 20 }; // before the textarea is on the page

function px(value, fallback) {
  const number = parseFloat(value);
  return Number.isFinite(number) ? number : fallback;
}

/** The widget height (element, its padding and the DOM widget's margins) that shows `lines` lines. */
export function promptsHeight(widget, lines) {
  const el = widget.element;
  if (!el?.isConnected) {
    const f = FALLBACK;
    return Math.ceil(lines * f.fontPx * f.lineFactor + f.padPx + f.marginPx);
  }
  const cs = getComputedStyle(el);
  const font = px(cs.fontSize, FALLBACK.fontPx);
  const line = px(cs.lineHeight, font * FALLBACK.lineFactor);
  const pad = px(cs.paddingTop, 0) + px(cs.paddingBottom, 0) + px(cs.borderTopWidth, 0) + px(cs.borderBottomWidth, 0);
  const margin = widget.computedHeight > 0 && el.offsetHeight > 0
    ? Math.max(0, widget.computedHeight - el.offsetHeight) : FALLBACK.marginPx;
  return Math.ceil(lines * line + pad + margin) + 1;
}

function lineCount(widget) {
  const lines = String(widget.value ?? "").split(/\r?\n/).length;
  return Math.min(MAX_LINES, Math.max(MIN_LINES, lines));
}

/** Gives the frame-prompt box its minimum height and grows the node to fit it (never shrinks it). */
function fitPrompts(node) {
  const widget = node.widgets?.find((w) => w.name === PROMPTS_WIDGET);
  if (!widget?.options || widget.l2sFitted) return;
  widget.l2sFitted = true;
  const previous = widget.options.getMinHeight;
  widget.options.getMinHeight = () => Math.max(previous?.() ?? 0, promptsHeight(widget, lineCount(widget)));
  const wanted = node.computeSize?.();
  if (wanted && (wanted[0] > node.size[0] || wanted[1] > node.size[1])) {
    node.setSize([Math.max(node.size[0], wanted[0]), Math.max(node.size[1], wanted[1])]);
  }
}

app.registerExtension({
  name: "lay2story.StoryNode",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      fitPrompts(this);
    });
    chain(nodeType.prototype, "onConfigure", function () {
      fitPrompts(this);
      const wanted = this.computeSize?.();
      if (wanted && wanted[1] > this.size[1]) this.setSize([this.size[0], wanted[1]]);
    });
  },
});
