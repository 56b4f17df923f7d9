"""``python -m lay2story_core generate`` on a tiny pipeline folder: outputs, metadata, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image
from tiny_models import make_pipeline

from lay2story_core.cli import main, write_outputs
from lay2story_core.pipelines.loading import save_story_pipeline
from lay2story_core.story import load_story


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    save_story_pipeline(make_pipeline(), folder)
    return folder


def test_generate_writes_frames_sheet_and_story(tmp_path, model_dir, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--story", "stories/story.json", "--out", str(out), "--model", str(model_dir),
                 "--steps", "2", "--height", "16", "--width", "16", "--seed", "5", "--quiet"])
    assert code == 0, capsys.readouterr().err
    frames = sorted(out.glob("frame_*.png"))
    assert len(frames) == 4 and (out / "contact_sheet.png").exists()
    with Image.open(frames[1]) as im:
        assert im.size == (16, 16)
        settings = json.loads(im.text["lay2story:settings"])
        assert settings["seed"] == 5 and settings["frame"] == 1 and settings["mode"] == "lay2story"
        assert json.loads(im.text["lay2story:story"])["frames"][1]["prompt"].startswith("walking")
    assert load_story(out / "story.json") == load_story("stories/story.json").with_layout()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_user_errors_are_one_line_with_exit_2(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "characters": [], "frames": []}')
    assert main(["generate", "--story", str(bad), "--out", str(tmp_path / "o"), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "characters" in err and "Traceback" not in err
    assert main(["generate", "--story", "stories/story.json", "--out", str(tmp_path / "o"),
                 "--model", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["generate", "--story", "stories/story.json", "--out", str(tmp_path / "o"), "--model",
                 str(model_dir), "--reference", "fox"]) == 2
    assert "--reference" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("frame_*.png"))


def test_outputs_are_all_or_nothing(tmp_path):
    class Broken:
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    story = load_story("stories/story.json")
    good = Image.new("RGB", (8, 8))
    with pytest.raises(OSError):
        write_outputs(tmp_path, story, [good, Broken()], {"seed": 0})
    assert list(tmp_path.iterdir()) == []


def test_help_documents_every_option():
    text = subprocess.run([sys.executable, "-m", "lay2story_core", "generate", "--help"], capture_output=True,
                          text=True, check=True).stdout
    for option in ("--story", "--out", "--model", "--mode", "--no-layout", "--reference", "--chunk-size", "--seed"):
        assert option in text
