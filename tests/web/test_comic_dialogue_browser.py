"""A dialogue line edited in the layout editor reaches the comic page: in the real ComfyUI frontend
(drive_comic_dialogue.mjs), on every frontend conftest.py finds, the story's line is retyped in the editor and the
prompt queued; the stand-in server runs the prompt with the pack's nodes (Layout Editor -> Layout Preview -> Comic
Page -> Preview Image), the page shows the run's outputs, and the page image the Preview Image node shows equals
the page the Python composer renders for exactly the edited text (and differs, where the bubble is, from the page
of the original text)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lay2story_core.story import Layout, Story
from nodes.comic_page import L2S_ComicPage
from nodes.image_utils import to_pil_list
from nodes.preview import L2S_LayoutPreview

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ORIGINAL = "Hello there"
EDITED = "Look, a kite!"
STORY = {
    "version": 2, "width": 64, "height": 64, "negative_prompt": "",
    "characters": [{"id": "hero", "identity": "a red striped star"}, {"id": "friend", "identity": "a blue circle"}],
    "frames": [{"prompt": "on the grass", "dialogue": [{"text": ORIGINAL, "speaker": "hero", "style": "speech"}]},
               {"prompt": "in the sky"}],
}
LAYOUT = {"version": 2, "characters": ["hero", "friend"],
          "frames": [{"subjects": [{"character": "hero", "box": [0.1, 0.45, 0.45, 0.9]}]},
                     {"subjects": [{"character": "friend", "box": [0.5, 0.1, 0.9, 0.5]}]}]}


def _runner():
    spec = importlib.util.spec_from_file_location("l2s_node_runner", ROOT / "tests" / "nodes" / "conftest.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    return runner


@pytest.fixture
def prompt_executor():
    """The server runs each queued prompt with the pack's nodes; Preview Image's PNGs go to /view (l2s_test/)."""
    runner = _runner()

    def executor_for(view_dir: Path):
        (view_dir / "l2s_test").mkdir(exist_ok=True)

        def execute(body: dict) -> dict:
            _, uis, sinks = runner.run_prompt(body["prompt"])
            shown = {node_id: ui for node_id, ui in uis.items() if ui and ui.get("images")}
            for node_id, inputs in sinks.items():
                records = []
                for k, image in enumerate(to_pil_list(inputs["images"], "images")):
                    name = f"l2s_test_{node_id}_{k}.png"
                    image.save(view_dir / "l2s_test" / name)
                    records.append({"filename": name, "subfolder": "l2s_test", "type": "temp"})
                shown[node_id] = {"images": records}
            return shown

        return execute

    return executor_for


@pytest.fixture
def view_folder(frontend_server, monkeypatch):
    """The pack's UI images (the layout preview's) go to the server's /view folder, as in ComfyUI's temp folder."""
    module = types.ModuleType("folder_paths")
    module.get_temp_directory = lambda: str(frontend_server.view_dir)
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    return frontend_server.view_dir


@pytest.fixture
def drive(run_driver, frontend_server, view_folder):
    result = run_driver("drive_comic_dialogue.mjs", story=STORY, layout=LAYOUT, edited_text=EDITED,
                        screenshot_dir=os.environ.get("L2S_SCREENSHOT_DIR"),
                        details=lambda: f"history: {frontend_server.history}")
    return result, frontend_server


def _page(text: str) -> np.ndarray:
    """The comic page the Python side composes for the story with frame 1's line saying ``text``."""
    layout = json.loads(json.dumps(LAYOUT))
    layout["frames"][0]["dialogue"] = [{"text": text, "speaker": "hero", "style": "speech"}]
    story = Story.from_dict(STORY).apply_layout(Layout.from_dict(layout))
    frames = L2S_LayoutPreview().preview(story)["result"][0]
    page = L2S_ComicPage().compose(frames, layout="strip", story=story)[0]
    return np.asarray(to_pil_list(page, "page")[0].convert("RGB"))


def test_a_dialogue_line_edited_in_the_browser_is_on_the_comic_page(drive, frontend):
    result, server = drive
    for error in result["other_errors"]:
        warnings.warn(f"frontend error not from this pack: {error}", stacklevel=1)
    assert not result["errors"], "\n".join(result["errors"])
    assert result["steps"]["story_lines"] == [{"speaker": "hero", "style": "speech", "text": ORIGINAL}]
    edited = result["steps"]["edited"]
    assert edited["lines"][0]["text"] == EDITED and edited["editor_state"] == "ok"
    assert json.loads(edited["json"])["frames"][0]["dialogue"] == [
        {"text": EDITED, "speaker": "hero", "style": "speech"}]

    # the server ran what the browser queued
    assert result["checks"]["status"]["status_str"] == "success", result["checks"]["status"]
    sent = next(n for n in server.prompts[0]["prompt"].values() if n["class_type"] == "L2S_LayoutEditor")
    assert Layout.from_json(sent["inputs"]["layout_json"]).dialogue[0][0].text == EDITED

    # the page the browser shows is the Python composer's page for the edited text, not the original's
    shown = result["checks"]["shown"]
    assert "l2s_test" in shown["src"]
    png = base64.b64decode(shown["png"].split(",", 1)[1])
    page = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    expected, original = _page(EDITED), _page(ORIGINAL)
    assert page.shape == expected.shape == original.shape
    bubble = np.any(expected != original, axis=-1)
    assert 200 < bubble.sum() < bubble.size // 4  # the texts differ in the bubble only
    assert np.array_equal(page, expected)
    assert np.any(page[bubble] != original[bubble])
    assert result["seconds"] < 90, result["timings"]
    print("TIMINGS", frontend[0], round(result["seconds"], 1), result["timings"])
