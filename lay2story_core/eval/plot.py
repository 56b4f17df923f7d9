"""Small line plots for benchmark reports: matplotlib when it is installed, else a PIL renderer (no extra deps).

A figure is a grid of :class:`Panel` s, each with a few :class:`Series` (e.g. time against frames for our
implementation and for the baseline measured in the same run).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

__all__ = ["Panel", "Series", "render_panels"]

_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_PANEL_W, _PANEL_H = 560, 380
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 70, 16, 30, 48


@dataclass(frozen=True)
class Series:
    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.xs) != len(self.ys):
            raise ValueError(f"series {self.label!r}: {len(self.xs)} x values but {len(self.ys)} y values")
        for v in (*self.xs, *self.ys):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"series {self.label!r}: values must be finite numbers, got {v!r}")


@dataclass(frozen=True)
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    log_y: bool = False


def _atomic_save(save, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def render_panels(panels: Sequence[Panel], path: str | os.PathLike, *, columns: int = 2,
                  backend: str = "auto") -> str:
    """Draw ``panels`` into one PNG at ``path`` (atomically). Returns the backend used: ``matplotlib`` or ``pil``."""
    if not panels:
        raise ValueError("panels: nothing to plot")
    if columns < 1:
        raise ValueError(f"columns: must be >= 1, got {columns!r}")
    if backend not in ("auto", "matplotlib", "pil"):
        raise ValueError(f"backend: expected auto, matplotlib or pil, got {backend!r}")
    path = Path(path)
    if backend in ("auto", "matplotlib"):
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            if backend == "matplotlib":
                raise
        else:
            _atomic_save(lambda tmp: _render_matplotlib(plt, panels, tmp, columns), path)
            return "matplotlib"
    _atomic_save(lambda tmp: _render_pil(panels, columns).save(tmp, format="PNG"), path)
    return "pil"


def _render_matplotlib(plt, panels: Sequence[Panel], tmp: str, columns: int) -> None:
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.8 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for s in panel.series:
            ax.plot(s.xs, s.ys, marker="o", label=s.label)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.1e}"
    return f"{v:.3g}"


def _render_pil(panels: Sequence[Panel], columns: int) -> Image.Image:
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    image = Image.new("RGB", (cols * _PANEL_W, rows * _PANEL_H), "white")
    font = ImageFont.load_default()
    for k, panel in enumerate(panels):
        _draw_panel(ImageDraw.Draw(image), font, panel, (k % cols) * _PANEL_W, (k // cols) * _PANEL_H)
    return image


def _draw_panel(draw: ImageDraw.ImageDraw, font, panel: Panel, ox: int, oy: int) -> None:
    left, top = ox + _MARGIN_L, oy + _MARGIN_T
    right, bottom = ox + _PANEL_W - _MARGIN_R, oy + _PANEL_H - _MARGIN_B
    draw.text((ox + _MARGIN_L, oy + 8), panel.title, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    xs = [x for s in panel.series for x in s.xs]
    ys = [y for s in panel.series for y in s.ys]
    log_y = panel.log_y and ys and min(ys) > 0
    if not xs:
        draw.text((left + 10, top + 10), "no data", fill="gray", font=font)
        return

    def ty(v: float) -> float:
        return math.log10(v) if log_y else v

    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ty(y) for y in ys), max(ty(y) for y in ys)
    if not log_y:
        y0 = min(y0, 0.0)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - (pad if log_y else 0.0), y1 + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (ty(y) - y0) / (y1 - y0) * (bottom - top)

    for i in range(5):  # y ticks
        value = y0 + (y1 - y0) * i / 4
        ypix = bottom - (bottom - top) * i / 4
        draw.line((left - 4, ypix, left, ypix), fill="black")
        draw.line((left, ypix, right, ypix), fill=(230, 230, 230))
        draw.text((ox + 4, ypix - 6), _fmt(10**value if log_y else value), fill="black", font=font)
    for x in sorted(set(xs)):  # x ticks at the measured points
        xpix = px(x)
        draw.line((xpix, bottom, xpix, bottom + 4), fill="black")
        draw.text((xpix - 8, bottom + 6), _fmt(x), fill="black", font=font)
    draw.text((left + (right - left) // 2 - 20, bottom + 22), panel.xlabel, fill="black", font=font)
    draw.text((ox + 4, top - 16), panel.ylabel + (" (log)" if log_y else ""), fill="black", font=font)
    for k, s in enumerate(panel.series):
        colour = _PALETTE[k % len(_PALETTE)]
        points = sorted(zip(s.xs, s.ys))
        pts = [(px(x), py(y)) for x, y in points]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        ly = top + 6 + 12 * k
        draw.line((right - 215, ly + 6, right - 200, ly + 6), fill=colour, width=2)
        draw.text((right - 195, ly), s.label[:34], fill=colour, font=font)
