"""``generate --comic``: the story's dialogue lettered on comic pages written as PDF/CBZ/PNG; comic option errors
come as one line, exit 2, before anything is sampled."""

from __future__ import annotations

import json
import zipfile

import pytest
from PIL import Image
from tiny_models import make_pipeline

from lay2story_core.cli import main
from lay2story_core.pipelines.loading import save_story_pipeline

STORY = {
    "version": 2, "width": 32, "height": 32,
    "characters": [{"id": "fox", "identity": "a small red fox"}, {"id": "owl", "identity": "a grey owl"}],
    "frames": [
        {"prompt": "in a forest", "subjects": [{"character": "fox", "box": [0.05, 0.5, 0.45, 0.95]},
                                               {"character": "owl", "box": [0.55, 0.1, 0.95, 0.5]}],
         "dialogue": [{"text": "Who goes there?", "speaker": "owl"}, {"text": "Just me!", "speaker": "fox"}]},
        {"prompt": "by a river", "subjects": [{"character": "fox", "box": [0.3, 0.4, 0.7, 0.9]}],
         "dialogue": [{"text": "Later that day..."}]},
    ],
}
ARGS = ["--steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    save_story_pipeline(make_pipeline(), folder)
    return folder


@pytest.fixture
def story_file(tmp_path):
    path = tmp_path / "fox_tale.json"
    path.write_text(json.dumps(STORY), encoding="utf-8")
    return path


def run(story, out, model_dir, *extra) -> int:
    return main(["generate", "--story", str(story), "--out", str(out), "--model", str(model_dir), *ARGS, *extra])


def test_generate_writes_a_cbz_and_a_pdf_with_bubbles(tmp_path, story_file, model_dir, capsys):
    cbz = tmp_path / "comic" / "fox.cbz"
    assert run(story_file, tmp_path / "out", model_dir, "--comic", str(cbz), "--comic-panel-width", "128",
               "--comic-layout", "manga") == 0, capsys.readouterr().err
    assert f"wrote {cbz}" in capsys.readouterr().out
    with zipfile.ZipFile(cbz) as archive:
        info = archive.read("ComicInfo.xml").decode()
        assert "<Title>fox_tale</Title>" in info and "<Manga>YesAndRightToLeft</Manga>" in info
        assert "<PageCount>1</PageCount>" in info and archive.namelist()[0] == "page_001.png"
    assert (tmp_path / "out" / "frame_001.png").is_file()  # the frames are written as before
    pdf = tmp_path / "fox.pdf"
    assert run(story_file, tmp_path / "out2", model_dir, "--comic", str(pdf), "--comic-layout", "2", "--page-size",
               "Letter", "--dpi", "72", "--comic-title", "Fox") == 0
    assert b"/MediaBox [ 0 0 612.0 792.0 ]" in pdf.read_bytes()  # US Letter, 8.5 x 11 in


def test_a_png_page_in_the_demo_style(tmp_path, story_file, model_dir):
    png = tmp_path / "page.png"
    assert run(story_file, tmp_path / "out", model_dir, "--comic", str(png), "--comic-panel-width", "160",
               "--no-layout") == 0
    with Image.open(png) as page:
        assert page.size == (2 * 160 + 12 + 2 * 24, 2 * 160 + 12 + 2 * 24)  # four_panel, one page of 2 frames


@pytest.mark.parametrize(("extra", "message"), [
    (["--comic", "x.docx"], "--comic: expected a .pdf, .cbz or .png file or a folder"),
    (["--comic", "c.pdf", "--comic-layout", "2|0"], "--comic-layout: row 2 ('0'): a panel count must be in"),
    (["--comic", "c.pdf", "--comic-layout", "classic", "--page-size", "A4"],
     "--page-size: classic pages are sized by their frames"),
    (["--comic", "c.pdf", "--comic-layout", "2|2", "--page-size", "A9"], "--page-size: expected 'auto'"),
    (["--comic", "c.pdf", "--comic-font-size", "2"], "--comic-font-size: expected an integer in [4, 256], got 2"),
    (["--comic", "c.pdf", "--font", "nofont.ttf"], "--font: file 'nofont.ttf' does not exist"),
    (["--comic", "c.pdf", "--dpi", "5"], "--dpi: expected an integer in [36, 1200], got 5"),
])
def test_comic_errors_are_one_line_before_sampling(tmp_path, story_file, model_dir, capsys, monkeypatch, extra,
                                                   message):
    from lay2story_core.pipelines import StoryPipeline

    monkeypatch.setattr(StoryPipeline, "__call__", lambda *a, **k: pytest.fail("sampled before the error"))
    monkeypatch.chdir(tmp_path)
    assert run(story_file, tmp_path / "out", model_dir, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.pdf").exists()


def test_text_the_font_lacks_fails_before_sampling(tmp_path, model_dir, capsys, monkeypatch):
    from lay2story_core.pipelines import StoryPipeline

    monkeypatch.setattr(StoryPipeline, "__call__", lambda *a, **k: pytest.fail("sampled before the error"))
    story = json.loads(json.dumps(STORY))
    story["frames"][1]["dialogue"][0]["text"] = "\u305d\u306e\u65e5\u306e\u5348\u5f8c"
    path = tmp_path / "cjk.json"
    path.write_text(json.dumps(story, ensure_ascii=False), encoding="utf-8")
    assert run(path, tmp_path / "out", model_dir, "--comic", str(tmp_path / "c.cbz")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: frames[1].dialogue[0].text: the built-in font")
    assert "--font" in err and "Noto Sans CJK" in err
