"""The layout editor in the real ComfyUI frontend, in Debian's chromium driven by playwright-core.

conftest.py serves the frontend wheel's static/ folder and this pack; drive_layout_editor.mjs adds the node, draws,
moves, resizes and deletes boxes, pages frames, types a caption, picks characters, checks the API prompt, saves and
reloads the workflow, feeds bad JSON and a run's background image, and reports what it saw. Skips (with the reason)
only when chromium, node, playwright-core or the frontend package are missing: `bash .ci/install_browser.sh`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from lay2story_core.story import Layout
from nodes.layout_editor import DEFAULT_LAYOUT_JSON, save_backgrounds

HERE = Path(__file__).resolve().parent
TOL = 0.012  # a drag lands within a pixel or two of its target on a ~480 px frame


def _boxes(layout: Layout, frame: int) -> dict[str, tuple]:
    return {s.character: s.box for s in layout.frames[frame]}


def _close(box, expected, tol=TOL):
    assert box is not None
    assert np.allclose(box, expected, atol=tol), f"box {box} != {expected}"


def _layout(step: dict) -> Layout:
    assert step["json"] == step["editor_text"], "the JSON widget and the canvas disagree"
    return Layout.from_json(step["json"])


@pytest.fixture
def background(frontend_server, monkeypatch):
    """A 64x48 run background (left half red) written by the node's own code into the server's /view folder."""
    module = types.ModuleType("folder_paths")
    module.get_temp_directory = lambda: str(frontend_server.view_dir)
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    image = np.zeros((1, 48, 64, 3), dtype=np.float32)
    image[0, :, :32, 0] = 1.0
    records, size = save_backgrounds(image)
    return {"record": records[0], "size": list(size)}


@pytest.fixture
def drive(browser_tools, frontend_server, background, tmp_path):
    _, chromium, playwright = browser_tools
    config = {"url": frontend_server.url, "chromium": chromium, "playwright_dir": str(playwright.parent),
              "out": str(tmp_path / "result.json"), "background": background,
              "screenshot_dir": os.environ.get("L2S_SCREENSHOT_DIR")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    start = time.monotonic()
    proc = subprocess.run(["node", str(HERE / "drive_layout_editor.mjs"), str(tmp_path / "config.json")],
                          capture_output=True, text=True, timeout=150)
    seconds = time.monotonic() - start
    out = Path(config["out"])
    result = json.loads(out.read_text()) if out.is_file() else {}
    assert proc.returncode == 0, (f"driver failed ({seconds:.1f} s):\n{proc.stderr[-4000:]}\n"
                                  f"steps seen: {list(result.get('steps', {}))}\nerrors: {result.get('errors')}\n"
                                  f"server requests: {frontend_server.requests[-15:]}")
    result["seconds"] = seconds
    return result, frontend_server


def test_layout_editor_in_the_real_frontend(drive):
    result, server = drive
    steps = result["steps"]
    for error in result["other_errors"]:
        warnings.warn(f"frontend error not from this pack: {error}", stacklevel=1)
    assert not result["errors"], "\n".join(result["errors"])

    assert steps["created"]["json"] == DEFAULT_LAYOUT_JSON
    assert steps["created"]["label"] == "frame 1 / 4"

    # draw, move, resize (frame 1)
    _close(_boxes(_layout(steps["drawn"]), 0)["hero"], [0.1, 0.1, 0.4, 0.5])
    _close(_boxes(_layout(steps["moved"]), 0)["hero"], [0.3, 0.2, 0.6, 0.6])
    _close(_boxes(_layout(steps["resized"]), 0)["hero"], [0.3, 0.2, 0.8, 0.9])
    assert steps["undone"]["json"] == steps["drawn"]["json"]  # Ctrl+Z on the graph undoes the move
    assert steps["undone"]["editor_text"] == steps["drawn"]["json"]  # ... and the canvas follows
    assert steps["moved_again"]["json"] == steps["moved"]["json"]

    # a new character, picked before drawing, goes to the next box
    assert _layout(steps["character_added"]).characters == ("hero", "villain")
    second = _boxes(_layout(steps["second_box"]), 0)
    _close(second["villain"], [0.02, 0.55, 0.25, 0.95])
    _close(second["hero"], [0.3, 0.2, 0.8, 0.9])

    # Delete removes the selected box, not the node
    deleted = _layout(steps["deleted"])
    assert list(_boxes(deleted, 0)) == ["villain"]
    assert steps["deleted"]["node_in_graph"]

    # frame 2: draw, pick the character, type the caption
    assert steps["frame2_drawn"]["label"] == "frame 2 / 4"
    _close(_boxes(_layout(steps["frame2_drawn"]), 1)["villain"], [0.5, 0.1, 0.9, 0.6])
    picked = _layout(steps["character_picked"]).frames[1]
    assert [s.character for s in picked] == ["hero"]
    captioned = _layout(steps["captioned"])
    assert captioned.frames[1][0].caption == "walking in the rain"
    assert _layout(steps["captioned"]).frames[0] == deleted.frames[0]  # frame 1 untouched

    # add a frame after frame 2, draw there, delete with the button, remove the frame
    assert steps["frame_added"]["label"] == "frame 3 / 5"
    assert _layout(steps["frame_added"]).num_frames == 5
    assert len(_layout(steps["frame_added_drawn"]).frames[2]) == 1
    assert _layout(steps["button_deleted"]).frames[2] == ()
    final = _layout(steps["frame_removed"])
    assert final.num_frames == 4
    assert final == captioned
    assert steps["back_to_first"]["label"] == "frame 1 / 4"

    # the API prompt carries layout_json and not the canvas; the workflow saves only the JSON widget
    final_text = steps["back_to_first"]["json"]
    inputs = result["prompt"]["inputs"]
    assert inputs == {"layout_json": final_text}
    assert result["prompt"]["workflow_widgets_values"] == [final_text]
    assert result["saved_widgets_values"] == [final_text]
    assert len(server.prompts) == 1
    sent = next(n for n in server.prompts[0]["prompt"].values() if n["class_type"] == "L2S_LayoutEditor")
    assert Layout.from_json(sent["inputs"]["layout_json"]) == final
    assert "layout_canvas" not in sent["inputs"]

    # the JSON view: pretty-printed (one box per line), resizable, the same layout as the widget's compact text
    view = result["checks"]["json_view"]
    assert view["lines"] > 10 and view["resize"] == "vertical" and view["height"] >= 120
    assert Layout.from_json(view["text"]) == final and '"box": [' in view["text"]

    # bad JSON: an error line naming the field, the text kept as typed, the canvas still there; then recovery
    assert steps["bad_typed"]["json"] == "{broken"
    assert steps["bad_typed"]["editor_state"] == "error"
    assert steps["bad_typed"]["status"].startswith("Layout error in JSON text: invalid JSON")
    assert result["checks"]["canvas_present_on_error"]
    assert steps["good_typed"]["editor_state"] == "ok"
    assert Layout.from_json(steps["good_typed"]["json"]) == final
    bad = steps["bad_widget_value"]
    assert bad["status"] == "Layout error in frame 1, box 1 (box): x1 0.2 < x0 0.5"  # the status line wraps: all of it
    assert result["checks"]["bad_red_pixels"] > 100
    assert json.loads(bad["json"])["frames"][0]["subjects"][0]["box"] == [0.5, 0, 0.2, 1]

    # reload through loadGraphData: one node, one canvas, same layout, boxes drawn where they were
    assert result["checks"]["reloaded_node_count"] == 1
    assert result["checks"]["reloaded_dom_widgets"] == 1
    assert _layout(steps["reloaded"]) == final
    px = result["pixels"]
    assert px["frame1_villain_box"][:3] != px["frame1_empty"][:3]
    assert px["frame2_hero_box"][:3] != px["frame2_empty"][:3]
    assert px["frame1_empty"][:3] == px["frame2_empty"][:3]  # both plain frame background
    assert steps["reloaded_frame2"]["label"] == "frame 2 / 4"

    # a run's background image shows under the boxes at its aspect; the story's characters join the picker
    assert px["background_left"][0] > 200 and px["background_left"][1] < 60
    assert px["background_right"][0] < 60
    assert px["letterbox"][:3] == [17, 17, 17]
    executed = _layout(steps["executed"])
    assert executed.characters == ("hero", "villain", "wizard")
    _close(_boxes(_layout(steps["drawn_on_background"]), 0)["hero"], [0.55, 0.1, 0.95, 0.45], tol=0.02)

    assert result["seconds"] < 90, result["timings"]
    print("TIMINGS", round(result["seconds"], 1), result["timings"])
