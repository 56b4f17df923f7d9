"""The ``generate --comic PATH`` options of the command line: checked before any model is loaded, then the pages
composed from the sampled frames and exported (:mod:`.export`)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from PIL import Image

from ..story import Story
from .compose import LAYOUTS, check_layout, compose_comic
from .dialogue import story_dialogue
from .export import check_comic_target, export_comic
from .fonts import ComicFont
from .style import READINGS, ComicStyle, check_reading
from .templates import DEFAULT_DPI, PAPER_SIZES_MM, parse_page_size, template_reading

__all__ = ["ComicRequest", "add_comic_arguments"]


def add_comic_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("comic", "typeset the frames as comic pages with the story's dialogue")
    group.add_argument("--comic", default=None, metavar="PATH",
                       help="also write the comic: PATH.pdf (one PDF), PATH.cbz (pages + ComicInfo.xml), PATH.png "
                            "(one page; more pages: PATH-1.png, ...) or a folder of page_001.png, ...")
    group.add_argument("--comic-layout", default="four_panel", metavar="LAYOUT",
                       help=f"page template: {', '.join(LAYOUTS)}, or a grid of rows like '2|1 2|3' (a row is a "
                            "panel count or relative panel widths, ':H' a relative height; default four_panel)")
    group.add_argument("--page-size", default="auto", metavar="SIZE",
                       help=f"page size for the templates other than four_panel/classic: auto, WxH pixels, or "
                            f"{', '.join(PAPER_SIZES_MM)} (add -landscape) at --dpi (default auto)")
    group.add_argument("--dpi", type=int, default=DEFAULT_DPI,
                       help=f"dots per inch of paper page sizes and of the PDF (default {DEFAULT_DPI})")
    group.add_argument("--reading", choices=READINGS, default="auto",
                       help="reading direction (default auto: right to left for manga, else left to right)")
    group.add_argument("--font", default=None, metavar="FONT",
                       help="a .ttf/.otf font file for the lettering (default: the built-in Aileron, ASCII only)")
    group.add_argument("--comic-font-size", type=int, default=20, metavar="PX",
                       help="lettering size in pixels before shrinking to fit (default 20)")
    group.add_argument("--comic-panel-width", type=int, default=0, metavar="PX",
                       help="panel width in pixels (default 0: the frames' width)")
    group.add_argument("--comic-title", default=None, metavar="TITLE",
                       help="title in the PDF and ComicInfo.xml (default: the story file's name)")
    group.add_argument("--comic-captions", action="store_true",
                       help="also letter each frame's prompt as its caption")


@dataclass(frozen=True)
class ComicRequest:
    """What ``--comic`` asked for, checked (:meth:`from_args`) before anything is sampled."""

    target: Path
    layout: str
    style: ComicStyle
    reading: str
    page_size: tuple[int, int] | None
    dpi: int
    title: str
    captions: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, story: Story) -> ComicRequest | None:
        """None without ``--comic``; ValueErrors name the option."""
        if args.comic is None:
            return None
        target = check_comic_target(args.comic, "--comic")
        layout = _option(lambda: check_layout(args.comic_layout))
        reading = template_reading(layout, check_reading(args.reading, "--reading"))
        size = _option(lambda: parse_page_size(args.page_size, args.dpi))
        if size is not None and layout in ("four_panel", "classic"):
            raise ValueError(f"--page-size: {layout} pages are sized by their frames; use a grid --comic-layout "
                             "such as '2|2' for a page size")
        style = _option(lambda: ComicStyle(font_size=args.comic_font_size, panel_width=args.comic_panel_width,
                                           font=args.font, min_font_size=min(8, args.comic_font_size)))
        texts = {f"frames[{i}].dialogue[{j}].text": line.text for i, frame in enumerate(story.frames)
                 for j, line in enumerate(frame.dialogue)}
        if args.comic_captions:
            texts.update({f"frames[{i}].prompt": frame.prompt for i, frame in enumerate(story.frames)})
        ComicFont(style.font).check(texts, "--font")
        title = args.comic_title or Path(args.story).stem
        return cls(target, layout, style, reading, size, args.dpi, title, args.comic_captions)

    def compose(self, story: Story, images: list[Image.Image], layout: bool) -> list[Image.Image]:
        """The pages; speaker boxes from the story's layout, or (``layout`` False) found in the frames."""
        dialogue = story_dialogue(story, layout=layout, images=images)
        captions = [frame.prompt for frame in story.frames] if self.captions else None
        return compose_comic(images, captions, self.layout, self.style, dialogue=dialogue, reading=self.reading,
                             page_size=self.page_size, dpi=self.dpi)

    def write(self, pages: list[Image.Image]) -> list[Path]:
        try:
            files = export_comic(pages, self.target, title=self.title, reading=self.reading, dpi=self.dpi,
                                 field="--comic")
        except OSError as err:
            raise ValueError(f"--comic: could not write {os.fspath(self.target)!r} "
                             f"({err.strerror or type(err).__name__})") from err
        for path in files:
            sys.stdout.write(f"wrote {path}\n")
        return files


_OPTIONS = MappingProxyType({
    "layout": "--comic-layout", "page_size": "--page-size", "dpi": "--dpi", "font": "--font",
    "font_size": "--comic-font-size", "min_font_size": "--comic-font-size", "panel_width": "--comic-panel-width",
})


def _option(check):
    """``check()`` with the field an error names (``layout: ...``) written as its option (``--comic-layout: ...``)."""
    try:
        return check()
    except ValueError as err:
        field, sep, rest = str(err).partition(": ")
        if not sep or field not in _OPTIONS:
            raise
        raise ValueError(f"{_OPTIONS[field]}: {rest}") from None
