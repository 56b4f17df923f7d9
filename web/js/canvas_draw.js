// Lay2Story box editor: drawing one frame on a 2D canvas context (no state of its own; box_canvas.js calls it with
// everything it needs). Sizes are CSS pixels of the editor's layout; the caller sets the context's transform for
// the on-screen size times devicePixelRatio so the picture is sharp at any ComfyUI zoom.

export const PALETTE = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292"];
export const ERROR_COLOUR = "#ff3b3b";
const FONT = "12px sans-serif";

export function colourFor(characters, id) {
  return PALETTE[Math.max(0, characters.indexOf(id)) % PALETTE.length];
}

/** `text` cut with "…" to fit maxWidth at the context's font (never squeezed). */
export function ellipsize(ctx, text, maxWidth) {
  if (!(maxWidth > 0)) return "";
  if (ctx.measureText(text).width <= maxWidth) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ctx.measureText(`${text.slice(0, mid)}\u2026`).width <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return lo > 0 ? `${text.slice(0, lo)}\u2026` : "";
}

function rectOf(f, box) {
  const [x0, y0, x1, y1] = box;
  return { x: f.x + x0 * f.w, y: f.y + y0 * f.h, w: (x1 - x0) * f.w, h: (y1 - y0) * f.h };
}

function label(ctx, text, x, y, maxWidth, colour) {
  const shown = ellipsize(ctx, text, maxWidth - 6);
  if (!shown) return;
  const w = ctx.measureText(shown).width + 6;
  ctx.fillStyle = "rgba(0,0,0,0.6)";
  ctx.fillRect(x, y, w, 16);
  ctx.fillStyle = colour;
  ctx.fillText(shown, x + 3, y + 2);
}

export function centerText(ctx, f, text) {
  ctx.fillStyle = "#999";
  ctx.textAlign = "center";
  ctx.fillText(ellipsize(ctx, text, f.w - 8), f.x + f.w / 2, f.y + f.h / 2 - 6);
  ctx.textAlign = "left";
}

/**
 * Draws one frame: backdrop, background image, the grid (1/8 lines while snapping, else thirds), the previous
 * frame's boxes as a ghost, the boxes (selected with handles; bad ones outlined in red), the drag preview and the
 * pixel size of the box being dragged. `v` = {f, image, snapping, ghost: [subjects], subjects, characters,
 * selected, bad: Set of indices, preview, dragLabel, handlePx, fullLabel}.
 */
export function drawFrame(ctx, w, h, v) {
  const { f } = v;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, w, h);
  ctx.fillStyle = "#2a2a2a";
  ctx.fillRect(f.x, f.y, f.w, f.h);
  if (v.image) ctx.drawImage(v.image, f.x, f.y, f.w, f.h);
  ctx.font = FONT;
  ctx.textBaseline = "top";
  const lines = v.snapping ? [1, 2, 3, 4, 5, 6, 7].map((k) => k / 8) : [1 / 3, 2 / 3];
  ctx.strokeStyle = v.snapping ? "rgba(255,255,255,0.25)" : "rgba(255,255,255,0.08)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const t of lines) {
    ctx.moveTo(f.x + t * f.w, f.y);
    ctx.lineTo(f.x + t * f.w, f.y + f.h);
    ctx.moveTo(f.x, f.y + t * f.h);
    ctx.lineTo(f.x + f.w, f.y + t * f.h);
  }
  ctx.stroke();
  for (const s of v.ghost ?? []) {
    if (!s.box) continue;
    const r = rectOf(f, s.box);
    ctx.setLineDash([3, 4]);
    ctx.strokeStyle = "rgba(255,255,255,0.35)";
    ctx.strokeRect(r.x, r.y, r.w, r.h);
    ctx.setLineDash([]);
    ctx.fillStyle = "rgba(255,255,255,0.35)";
    ctx.fillText(ellipsize(ctx, `prev: ${s.character}`, r.w - 4), r.x + 2, r.y + r.h - 14);
  }
  (v.subjects ?? []).forEach((s, i) => {
    if (s.box) drawBox(ctx, f, s, v, i);
  });
  if (v.preview) {
    const r = rectOf(f, v.preview);
    ctx.setLineDash([5, 4]);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1;
    ctx.strokeRect(r.x, r.y, r.w, r.h);
    ctx.setLineDash([]);
  }
  const sized = v.preview ?? (v.dragLabel && v.subjects?.[v.selected]?.box);
  if (v.dragLabel && sized) {
    const r = rectOf(f, sized);
    const text = v.dragLabel;
    const tw = ctx.measureText(text).width + 8;
    const x = Math.min(Math.max(f.x, r.x + r.w - tw), f.x + f.w - tw);
    const y = r.y + r.h + 2 + 16 <= f.y + f.h ? r.y + r.h + 2 : Math.max(f.y, r.y - 18);
    ctx.fillStyle = "rgba(0,0,0,0.75)";
    ctx.fillRect(x, y, tw, 16);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + 4, y + 2);
  }
}

function drawBox(ctx, f, s, v, i) {
  const selected = i === v.selected;
  const bad = v.bad?.has(i);
  const colour = colourFor(v.characters, s.character);
  const r = rectOf(f, s.box);
  ctx.fillStyle = `${colour}33`;
  ctx.fillRect(r.x, r.y, r.w, r.h);
  ctx.strokeStyle = colour;
  ctx.lineWidth = selected ? 3 : 1.5;
  ctx.strokeRect(r.x, r.y, r.w, r.h);
  if (bad) {
    ctx.strokeStyle = ERROR_COLOUR;
    ctx.lineWidth = 3;
    ctx.setLineDash([6, 3]);
    ctx.strokeRect(r.x - 2, r.y - 2, r.w + 4, r.h + 4);
    ctx.setLineDash([]);
  }
  // Unselected boxes show the character (caption cut with an ellipsis); the selected one its full caption, wrapped
  // onto as many label lines as the box holds.
  const text = s.caption ? `${s.character}: ${s.caption}` : s.character;
  if (!selected || !s.caption) {
    label(ctx, (bad ? "\u26A0 " : "") + text, r.x + 2, r.y + 2, r.w - 2, bad ? ERROR_COLOUR : colour);
  } else {
    const words = text.split(/\s+/);
    const rows = [];
    let row = "";
    for (const word of words) {
      const next = row ? `${row} ${word}` : word;
      if (ctx.measureText(next).width > r.w - 10 && row) {
        rows.push(row);
        row = word;
      } else row = next;
    }
    if (row) rows.push(row);
    const fit = Math.max(1, Math.floor((r.h - 4) / 16));
    rows.slice(0, fit).forEach((line, k) => {
      const last = k === fit - 1 && rows.length > fit;
      label(ctx, last ? `${line}\u2026` : line, r.x + 2, r.y + 2 + k * 16, r.w - 2, colour);
    });
  }
  if (!selected) return;
  const hs = v.handlePx;
  ctx.fillStyle = "#fff";
  for (const [hx, hy] of [[r.x, r.y], [r.x + r.w / 2, r.y], [r.x + r.w, r.y], [r.x + r.w, r.y + r.h / 2],
    [r.x + r.w, r.y + r.h], [r.x + r.w / 2, r.y + r.h], [r.x, r.y + r.h], [r.x, r.y + r.h / 2]]) {
    ctx.fillRect(hx - hs / 2, hy - hs / 2, hs, hs);
  }
}
