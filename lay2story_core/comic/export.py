"""Comic export: PNG pages, one PDF of all pages (physical size = pixels / DPI), and CBZ (the pages as PNG plus a
ComicRack ``ComicInfo.xml``: title, page count, reading direction, one ``Page`` entry per page). Every file is
written atomically (:mod:`lay2story_core.fileio`): a reader never sees half a comic, a failed write keeps the old.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree

from PIL import Image

from ..fileio import write_bytes_atomic
from .style import int_in

__all__ = ["COMIC_SUFFIXES", "check_comic_target", "comic_info_xml", "export_comic", "pdf_bytes", "png_bytes"]

logger = logging.getLogger(__name__)

COMIC_SUFFIXES = (".pdf", ".cbz", ".png")  # any other path is a folder of PNG pages
_CBZ_TIME = (2020, 1, 1, 0, 0, 0)  # fixed member times: the same pages give the same archive bytes


def _check_pages(pages: Sequence[Image.Image]) -> list[Image.Image]:
    pages = list(pages)
    if not pages:
        raise ValueError("pages: need at least one page")
    for k, page in enumerate(pages):
        if not isinstance(page, Image.Image):
            raise ValueError(f"pages[{k}]: expected a PIL image, got {type(page).__name__}")
    return pages


def png_bytes(page: Image.Image, dpi: int | None = None, pnginfo=None) -> bytes:
    buffer = io.BytesIO()
    extra = {} if dpi is None else {"dpi": (dpi, dpi)}
    page.convert("RGB").save(buffer, format="PNG", optimize=True, pnginfo=pnginfo, **extra)
    return buffer.getvalue()


def pdf_bytes(pages: Sequence[Image.Image], dpi: int, title: str = "") -> bytes:
    """One PDF page per image, ``width / dpi`` x ``height / dpi`` inches (Pillow's PDF writer)."""
    pages = [p.convert("RGB") for p in _check_pages(pages)]
    int_in(dpi, "dpi", 36, 1200)
    buffer = io.BytesIO()
    pages[0].save(buffer, format="PDF", save_all=True, append_images=pages[1:], resolution=float(dpi),
                  title=title or None, producer="Lay2Story")
    return buffer.getvalue()


def comic_info_xml(title: str, pages: Sequence[Image.Image], reading: str = "ltr",
                   sizes: Sequence[int] | None = None) -> str:
    """ComicRack's ``ComicInfo.xml`` (schema 2.0): ``Title``, ``PageCount``, ``Manga`` (``YesAndRightToLeft`` for
    right-to-left reading, else ``No``) and ``Pages`` with one ``Page`` (index, size, byte size) per page."""
    if reading not in ("ltr", "rtl"):
        raise ValueError(f"reading: expected 'ltr' or 'rtl', got {reading!r}")
    root = ElementTree.Element("ComicInfo", {"xmlns:xsd": "http://www.w3.org/2001/XMLSchema",
                                             "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    ElementTree.SubElement(root, "Title").text = title
    ElementTree.SubElement(root, "Notes").text = "Made with Lay2Story"
    ElementTree.SubElement(root, "PageCount").text = str(len(pages))
    ElementTree.SubElement(root, "Manga").text = "YesAndRightToLeft" if reading == "rtl" else "No"
    listing = ElementTree.SubElement(root, "Pages")
    for k, page in enumerate(pages):
        attrs = {"Image": str(k), "ImageWidth": str(page.width), "ImageHeight": str(page.height)}
        if sizes is not None:
            attrs["ImageSize"] = str(sizes[k])
        if k == 0:
            attrs["Type"] = "FrontCover"
        ElementTree.SubElement(listing, "Page", attrs)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def cbz_bytes(pages: Sequence[Image.Image], title: str, reading: str = "ltr", dpi: int | None = None) -> bytes:
    """A CBZ (zip) of ``page_001.png``... and ``ComicInfo.xml``."""
    pages = _check_pages(pages)
    encoded = [png_bytes(page, dpi) for page in pages]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, data in enumerate(encoded, start=1):
            archive.writestr(zipfile.ZipInfo(f"page_{k:03d}.png", _CBZ_TIME), data, zipfile.ZIP_STORED)
        info = comic_info_xml(title, pages, reading, [len(d) for d in encoded])
        archive.writestr(zipfile.ZipInfo("ComicInfo.xml", _CBZ_TIME), info, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def check_comic_target(path: str | os.PathLike, field: str = "comic") -> Path:
    """``path`` as a comic target (.pdf, .cbz, .png or a folder) whose folder exists or can be made; errors name
    ``field``. Nothing is written."""
    target = Path(os.path.abspath(os.fspath(path)))
    suffix = target.suffix.lower()
    if suffix and suffix not in COMIC_SUFFIXES and not target.is_dir():
        raise ValueError(f"{field}: expected a .pdf, .cbz or .png file or a folder, got {os.fspath(path)!r}")
    if suffix in COMIC_SUFFIXES and target.is_dir():
        raise ValueError(f"{field}: {os.fspath(path)!r} is a folder, not a {suffix} file")
    if not suffix and target.exists() and not target.is_dir():
        raise ValueError(f"{field}: {os.fspath(path)!r} exists and is not a folder")
    folder = target if not suffix else target.parent
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{field}: cannot write in {os.fspath(existing or folder)!r}")
    return target


def export_comic(pages: Sequence[Image.Image], path: str | os.PathLike, *, title: str = "Comic",
                 reading: str = "ltr", dpi: int = 150, field: str = "comic") -> list[Path]:
    """Writes ``pages`` to ``path`` by its suffix: ``.pdf`` (one PDF), ``.cbz`` (pages + ComicInfo.xml), ``.png``
    (one page: that file; several: ``NAME-1.png``, ``NAME-2.png``...) or anything else: a folder (created) of
    ``page_001.png``... Returns the files written."""
    pages = _check_pages(pages)
    int_in(dpi, "dpi", 36, 1200)
    if reading not in ("ltr", "rtl"):
        raise ValueError(f"reading: expected 'ltr' or 'rtl', got {reading!r}")
    target = check_comic_target(path, field)
    suffix = target.suffix.lower()
    if suffix == ".pdf":
        files = {target: pdf_bytes(pages, dpi, title)}
    elif suffix == ".cbz":
        files = {target: cbz_bytes(pages, title, reading, dpi)}
    elif suffix == ".png":
        names = [target] if len(pages) == 1 else [target.with_name(f"{target.stem}-{k}.png")
                                                  for k in range(1, len(pages) + 1)]
        files = {name: png_bytes(page, dpi) for name, page in zip(names, pages)}
    else:
        files = {target / f"page_{k:03d}.png": png_bytes(page, dpi) for k, page in enumerate(pages, start=1)}
    next(iter(files)).parent.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_bytes_atomic(name, data)
    logger.info("wrote %d file(s) of %d comic page(s) to %s", len(files), len(pages), target)
    return list(files)
