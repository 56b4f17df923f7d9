"""L2S_ComicPage's templates, bubbles and options, and L2S_SaveComic saving like ComfyUI's SaveImage."""

from __future__ import annotations

import os
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from lay2story_core.story import Layout, Story, Subject
from nodes.comic_page import L2S_ComicPage
from nodes.save_comic import L2S_SaveComic

STORY = Story.from_dict({
    "version": 2, "width": 64, "height": 64,
    "characters": [{"id": "hero", "identity": "a red square"}, {"id": "cat", "identity": "a blue square"}],
    "frames": [
        {"prompt": "park", "subjects": [{"character": "hero", "box": [0.05, 0.5, 0.45, 0.95]}],
         "dialogue": [{"text": "Hello!", "speaker": "hero"}]},
        {"prompt": "lake", "subjects": [{"character": "cat"}], "dialogue": [{"text": "Meow?", "speaker": "cat"}]},
        {"prompt": "home"},
    ],
})
BASE = ("four_panel", 14, 128, 8, 8, 2, "#ffffff", "#000000")


def frames(n: int = 3) -> torch.Tensor:
    return torch.full((n, 64, 64, 3), 0.3)


def folder_paths_module(output, temp) -> types.ModuleType:
    """``folder_paths`` with ComfyUI's get_save_image_path numbering (ComfyUI 0.3.64, without %date% variables)."""
    module = types.ModuleType("folder_paths")
    module.get_output_directory = lambda: str(output)
    module.get_temp_directory = lambda: str(temp)

    def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
        def map_filename(filename):
            prefix_len = len(os.path.basename(filename_prefix))
            prefix = filename[:prefix_len + 1]
            try:
                digits = int(filename[prefix_len + 1:].split("_")[0])
            except ValueError:
                digits = 0
            return digits, prefix

        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full_output_folder = os.path.join(output_dir, subfolder)
        try:
            counter = max(filter(lambda a: os.path.normcase(a[1][:-1]) == os.path.normcase(filename)
                                 and a[1][-1] == "_", map(map_filename, os.listdir(full_output_folder))))[0] + 1
        except ValueError:
            counter = 1
        except FileNotFoundError:
            os.makedirs(full_output_folder, exist_ok=True)
            counter = 1
        return full_output_folder, filename, counter, subfolder, filename_prefix

    module.get_save_image_path = get_save_image_path
    module.folder_names_and_paths = {"lay2story": ([], set()), "grounding-dino": ([], set())}
    return module


@pytest.fixture
def comfy_folders(tmp_path, monkeypatch):
    output, temp = tmp_path / "output", tmp_path / "temp"
    output.mkdir()
    temp.mkdir()
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths_module(output, temp))
    return output, temp


def test_comic_page_letters_the_story_dialogue():
    (plain,) = L2S_ComicPage().compose(frames(), *BASE, story=STORY, bubbles=False)
    (lettered,) = L2S_ComicPage().compose(frames(), *BASE, story=STORY)
    assert plain.shape == lettered.shape and not torch.equal(plain, lettered)
    # frame 0's bubble is white where the grey frame was; frame 2 has no dialogue: unchanged
    assert (lettered[0, 8:8 + 128, 8:8 + 128] == 1.0).all(-1).any()
    (only_captions,) = L2S_ComicPage().compose(frames(), *BASE, captions="a\nb\nc", bubbles=False)
    assert only_captions.shape == plain.shape


def test_comic_page_templates_reading_and_page_size():
    (grid,) = L2S_ComicPage().compose(frames(), "grid", *BASE[1:], story=STORY, grid="1 2", page_size="400x300")
    assert grid.shape == (2, 300, 400, 3)  # 3 frames on pages of 2 panels
    (manga,) = L2S_ComicPage().compose(frames(5), "manga", *BASE[1:], page_size="A5", dpi=72)
    assert manga.shape == (1, 595, 420, 3)
    (strip,) = L2S_ComicPage().compose(frames(), "strip", *BASE[1:])
    assert strip.shape == (1, 128 + 16, 3 * 128 + 2 * 8 + 16, 3)
    (webtoon,) = L2S_ComicPage().compose(frames(), "webtoon", *BASE[1:], reading="rtl")
    assert webtoon.shape == (1, 3 * 128 + 2 * 8 + 16, 128 + 16, 3)
    with pytest.raises(ValueError, match=r"^layout: row 2 \('x'\)"):
        L2S_ComicPage().compose(frames(), "grid", *BASE[1:], grid="2|x")
    with pytest.raises(ValueError, match="^page_size: expected 'auto'"):
        L2S_ComicPage().compose(frames(), "grid", *BASE[1:], page_size="huge")
    with pytest.raises(ValueError, match="^font: file 'missing.ttf' does not exist"):
        L2S_ComicPage().compose(frames(), *BASE, font="missing.ttf")


def test_comic_page_takes_detected_boxes_for_frames_without_a_layout():
    detected = Layout(frames=((), (Subject("cat", (0.5, 0.5, 0.95, 0.95)),), ()))
    (with_boxes,) = L2S_ComicPage().compose(frames(), *BASE, story=STORY, detected=detected)
    (without,) = L2S_ComicPage().compose(frames(), *BASE, story=STORY)
    assert not torch.equal(with_boxes, without)  # the cat's bubble moved to point at its detected box
    with pytest.raises(ValueError, match="^detected: expected an L2S_LAYOUT, got str"):
        L2S_ComicPage().compose(frames(), *BASE, story=STORY, detected="boxes")
    cjk = Story.from_dict({**STORY.to_dict(), "frames": [{"prompt": "park", "dialogue": [{"text": "\u4f60\u597d"}]}]})
    with pytest.raises(ValueError, match=r"^dialogue\[0\].lines\[0\]: the built-in font .* Noto Sans CJK"):
        L2S_ComicPage().compose(frames(1), *BASE, story=cjk)


def test_save_comic_writes_pdf_and_cbz_into_the_output_folder_with_previews(comfy_folders):
    output, temp = comfy_folders
    pages = torch.rand(2, 120, 80, 3)
    ui = L2S_SaveComic().save(pages, "Lay2Story/book", "all", "My book", "rtl", 100, prompt={"1": {}},
                              extra_pnginfo={"workflow": {"nodes": []}})
    written = sorted(p.name for p in (output / "Lay2Story").iterdir())
    assert written == ["book_00001_.cbz", "book_00001_.pdf", "book_00001_p001.png", "book_00001_p002.png"]
    assert ui["ui"]["images"] == [{"filename": f"book_00001_p00{k}.png", "subfolder": "Lay2Story", "type": "output"}
                                  for k in (1, 2)]
    assert ui["result"][0] is pages and ui["result"][1].splitlines()[0] == "Lay2Story/book_00001_.pdf"
    with Image.open(output / "Lay2Story" / "book_00001_p001.png") as png:
        assert png.size == (80, 120) and "workflow" in png.text and "prompt" in png.text
    with zipfile.ZipFile(output / "Lay2Story" / "book_00001_.cbz") as archive:
        assert b"YesAndRightToLeft" in archive.read("ComicInfo.xml")
    assert b"/MediaBox [ 0 0 57.6 86.4 ]" in (output / "Lay2Story" / "book_00001_.pdf").read_bytes()
    # a PDF alone: the next number, and the pages previewed from the temp folder
    ui = L2S_SaveComic().save(pages, "Lay2Story/book", "pdf", "My book", "ltr", 100)
    assert (output / "Lay2Story" / "book_00002_.pdf").is_file()
    assert {i["type"] for i in ui["ui"]["images"]} == {"temp"} and len(ui["ui"]["images"]) == 2
    assert all((temp / i["subfolder"] / i["filename"]).is_file() for i in ui["ui"]["images"])
    assert not [p for p in (output / "Lay2Story").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_save_comic_errors(comfy_folders):
    pages = torch.rand(1, 32, 32, 3)
    for kwargs, message in ((dict(format="docx"), "^format: expected one of"),
                            (dict(reading="up"), "^reading: expected 'ltr' or 'rtl'"),
                            (dict(dpi=5), r"^dpi: expected an integer in \[36, 1200\], got 5"),
                            (dict(filename_prefix=" "), "^filename_prefix: expected a file name")):
        with pytest.raises(ValueError, match=message):
            L2S_SaveComic().save(pages, **kwargs)
    with pytest.raises(ValueError, match="^pages: "):
        L2S_SaveComic().save(np.zeros((2, 2)))


def test_save_comic_without_comfyui_uses_the_output_env_folder(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    monkeypatch.setenv("LAY2STORY_OUTPUT_DIR", str(tmp_path / "out"))
    L2S_SaveComic().save(torch.rand(1, 16, 16, 3), "c/x", "png", "t", "ltr", 150)
    L2S_SaveComic().save(torch.rand(1, 16, 16, 3), "c/x", "png", "t", "ltr", 150)
    assert sorted(p.name for p in (tmp_path / "out" / "c").iterdir()) == ["x_00001_p001.png", "x_00002_p001.png"]

