// ComfyUI extension of the Lay2Story pack: the Story Sampler shows its run's warning line on the node. A story the
// model was not trained for (another frame size, words outside the vocabulary its lay2story.json declares) samples
// as asked and logs one warning; the node returns the same line as UI text (`output.text`), drawn here under the
// widgets until the next run. No widget is added, so saved widget values keep their positions.
import { app } from "../../../scripts/app.js";
import { chain } from "./node_hooks.js";

const NODE_ID = "L2S_StorySampler";
const LINE_HEIGHT = 14;
const COLOUR = "#e0a040";

/** `text` broken into lines that fit `width` pixels with the context's font. */
function wrap(ctx, text, width) {
  const lines = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > width) {
      lines.push(line);
      line = word;
    } else {
      line = next;
    }
  }
  if (line) lines.push(line);
  return lines;
}

app.registerExtension({
  name: "lay2story.SamplerWarning",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_ID) return;
    const proto = nodeType.prototype;
    chain(proto, "onExecuted", function (output) {
      const text = Array.isArray(output?.text) ? output.text.join(" ") : "";
      this.l2sWarning = text || null;
      this.setDirtyCanvas?.(true, true);
    });
    chain(proto, "onDrawForeground", function (ctx) {
      if (!this.l2sWarning || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.fillStyle = COLOUR;
      const lines = wrap(ctx, `\u26a0 ${this.l2sWarning}`, Math.max(this.size[0] - 16, 40));
      const top = this.size[1] + 6;
      lines.forEach((line, i) => ctx.fillText(line, 8, top + (i + 1) * LINE_HEIGHT));
      ctx.restore();
    });
  },
});
