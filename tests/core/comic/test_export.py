"""lay2story_core.comic.export: PNG pages, a PDF of the right physical size, CBZ with ComicInfo.xml, atomically."""

from __future__ import annotations

import io
import re
import zipfile
from xml.etree import ElementTree

import pytest
from PIL import Image

from lay2story_core.comic import check_comic_target, comic_info_xml, export_comic, parse_page_size, pdf_bytes

PAGES = [Image.new("RGB", (874, 1240), c) for c in ("white", "red", "blue")]  # A5 at 150 dpi


def media_boxes(data: bytes) -> list[tuple[float, float]]:
    return [(float(w), float(h)) for w, h in re.findall(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)]


def test_pdf_pages_have_the_paper_size():
    assert parse_page_size("A5", 150) == (874, 1240)
    data = pdf_bytes(PAGES, 150, "My comic")
    boxes = media_boxes(data)
    assert len(boxes) == 3 and all(b == pytest.approx((419.52, 595.2)) for b in boxes)  # A5: 419.5 x 595.3 pt
    assert "My comic".encode("utf-16-be") in data  # the title, in the document info
    assert media_boxes(pdf_bytes(PAGES[:1], 300))[0] == pytest.approx((209.76, 297.6))  # same pixels, half size


def test_cbz_holds_the_pages_and_comic_info(tmp_path):
    [path] = export_comic(PAGES, tmp_path / "story.cbz", title="Fox & Cat", reading="rtl")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names == ["page_001.png", "page_002.png", "page_003.png", "ComicInfo.xml"]
        with Image.open(io.BytesIO(archive.read("page_002.png"))) as page:
            assert page.size == (874, 1240) and page.getpixel((5, 5)) == (255, 0, 0)
        info = ElementTree.fromstring(archive.read("ComicInfo.xml"))
    assert info.tag == "ComicInfo" and info.findtext("Title") == "Fox & Cat"
    assert info.findtext("PageCount") == "3" and info.findtext("Manga") == "YesAndRightToLeft"
    pages = info.find("Pages").findall("Page")
    assert [p.get("Image") for p in pages] == ["0", "1", "2"] and pages[0].get("Type") == "FrontCover"
    assert pages[1].get("ImageWidth") == "874" and int(pages[1].get("ImageSize")) > 0
    ltr = ElementTree.fromstring(comic_info_xml("t", PAGES[:1]))
    assert ltr.findtext("Manga") == "No" and ltr.findtext("PageCount") == "1"
    assert path.read_bytes() == export_comic(PAGES, tmp_path / "again.cbz", title="Fox & Cat",
                                             reading="rtl")[0].read_bytes()  # deterministic


def test_png_and_folder_targets(tmp_path):
    [one] = export_comic(PAGES[:1], tmp_path / "page.png", dpi=300)
    with Image.open(one) as im:
        assert im.size == (874, 1240) and round(im.info["dpi"][0]) == 300
    many = export_comic(PAGES, tmp_path / "pages.png")
    assert [p.name for p in many] == ["pages-1.png", "pages-2.png", "pages-3.png"]
    folder = export_comic(PAGES[:2], tmp_path / "new" / "comic")
    assert [p.relative_to(tmp_path).as_posix() for p in folder] == ["new/comic/page_001.png",
                                                                     "new/comic/page_002.png"]


def test_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "book.pdf"
    export_comic(PAGES[:1], target)
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        export_comic(PAGES, target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["book.pdf"]


def test_bad_targets_name_the_field(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.pdf").mkdir()
    for path, message in ((tmp_path / "x.docx", "^--comic: expected a .pdf, .cbz or .png file or a folder"),
                          (tmp_path / "adir.pdf", "^--comic: .* is a folder, not a .pdf file"),
                          (tmp_path / "afile", "^--comic: .* exists and is not a folder"),
                          (tmp_path / "afile" / "x.pdf", "^--comic: cannot write in")):
        with pytest.raises(ValueError, match=message):
            check_comic_target(path, "--comic")
    with pytest.raises(ValueError, match="^pages: need at least one page"):
        export_comic([], tmp_path / "x.pdf")
    with pytest.raises(ValueError, match=r"^dpi: expected an integer in \[36, 1200\]"):
        export_comic(PAGES, tmp_path / "x.pdf", dpi=5)
