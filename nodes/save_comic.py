"""``L2S_SaveComic``: comic pages saved into ComfyUI's output folder, like ``SaveImage``: PNG pages, one PDF, a CBZ
(pages + ComicInfo.xml) or all three (``lay2story_core.comic.export``), each file written atomically."""

from __future__ import annotations

import logging
import os

from lay2story_core.comic.export import cbz_bytes, pdf_bytes, png_bytes
from lay2story_core.fileio import write_bytes_atomic

from . import comfy_env
from .image_utils import to_pil_list

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "L2S_SaveComic"]

FORMATS = ("png", "pdf", "cbz", "all")


class L2S_SaveComic:
    NODE_ID = "L2S_SaveComic"
    DISPLAY_NAME = "Lay2Story Save Comic"
    CATEGORY = "Lay2Story/output"
    DESCRIPTION = (
        "Saves comic pages (e.g. from Lay2Story Comic Page) into ComfyUI's output folder: PNG pages, one PDF with "
        "every page (its physical size from the DPI), a CBZ comic book (pages + ComicInfo.xml with the title, page "
        "count and reading direction), or all three. The pages are shown on the node."
    )
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("pages", "files")
    OUTPUT_TOOLTIPS = ("The pages, unchanged.", "The files written, one path per line (relative to the output "
                                                "folder).")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "pages": ("IMAGE", {"tooltip": "The comic pages, in reading order."}),
                "filename_prefix": ("STRING", {
                    "default": "Lay2Story/comic",
                    "tooltip": "File name start, with sub-folders of the output folder ('Lay2Story/comic'); "
                               "ComfyUI's %date% style variables work."}),
                "format": (list(FORMATS), {"default": "pdf",
                                           "tooltip": "png: one PNG per page; pdf: one PDF of all pages; cbz: a "
                                                      "comic book archive; all: the three."}),
                "title": ("STRING", {"default": "Comic", "tooltip": "The comic's title (PDF and ComicInfo.xml)."}),
                "reading": (["ltr", "rtl"], {"default": "ltr",
                                             "tooltip": "Reading direction recorded in the CBZ (rtl: manga, "
                                                        "Manga=YesAndRightToLeft)."}),
                "dpi": ("INT", {"default": 150, "min": 36, "max": 1200,
                                "tooltip": "Dots per inch: a PDF page is width/dpi x height/dpi inches; also "
                                           "written into the PNGs."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, pages, filename_prefix: str = "Lay2Story/comic", format: str = "pdf", title: str = "Comic",
             reading: str = "ltr", dpi: int = 150, prompt=None, extra_pnginfo=None) -> dict:
        images = to_pil_list(pages, "pages")
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
        if reading not in ("ltr", "rtl"):
            raise ValueError(f"reading: expected 'ltr' or 'rtl', got {reading!r}")
        if isinstance(dpi, bool) or not isinstance(dpi, int) or not 36 <= dpi <= 1200:
            raise ValueError(f"dpi: expected an integer in [36, 1200], got {dpi!r}")
        if not isinstance(filename_prefix, str) or not filename_prefix.strip():
            raise ValueError(f"filename_prefix: expected a file name, got {filename_prefix!r}")
        title = title.strip() or "Comic"
        width, height = images[0].size
        folder, name, counter, subfolder, kind = comfy_env.save_path(filename_prefix.strip(), width, height)
        written, shown = [], []
        stem = f"{name}_{counter:05}_"
        if format in ("pdf", "all"):
            written.append(f"{stem}.pdf")
            write_bytes_atomic(os.path.join(folder, written[-1]), pdf_bytes(images, dpi, title))
        if format in ("cbz", "all"):
            written.append(f"{stem}.cbz")
            write_bytes_atomic(os.path.join(folder, written[-1]), cbz_bytes(images, title, reading, dpi))
        if format in ("png", "all"):
            info = comfy_env.png_metadata(prompt, extra_pnginfo)
            for k, image in enumerate(images, start=1):
                written.append(f"{stem}p{k:03d}.png")
                write_bytes_atomic(os.path.join(folder, written[-1]), png_bytes(image, dpi, info))
                shown.append({"filename": written[-1], "subfolder": subfolder, "type": kind})
        else:  # previews of the pages in the temp folder, like PreviewImage
            tfolder, tname, tcounter, tsub, tkind = comfy_env.save_path(f"{name}_preview", width, height, temp=True)
            for k, image in enumerate(images, start=1):
                file = f"{tname}_{tcounter:05}_p{k:03d}.png"
                write_bytes_atomic(os.path.join(tfolder, file), png_bytes(image))
                shown.append({"filename": file, "subfolder": tsub, "type": tkind})
        files = [os.path.join(subfolder, f).replace(os.sep, "/") for f in written]
        logger.info("saved comic: %s", ", ".join(files))
        return {"ui": {"images": shown}, "result": (pages, "\n".join(files))}
