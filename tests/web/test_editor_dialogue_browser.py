"""The layout editor in the real ComfyUI frontend (drive_editor_dialogue.mjs: Debian's chromium through
playwright-core), on every frontend conftest.py finds: a cast of Character nodes makes the picker offer every
character (a second box on the shipped drawn-layout workflow), a frame's dialogue lines are added, edited and
deleted, and the papercuts of a real session stay fixed: the status line never resizes the canvas, "copy to next
frame" keeps the boxes already there and says so (Ctrl+Z undoes it), a run's frames stay behind the boxes after
Ctrl+Z rebuilds the node, the gesture hint fits the default width, and the Story node shows all its prompt lines.
What the browser sends is then run through the Character, Story and editor nodes in-process."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from lay2story_core.story import DialogueLine, Layout
from nodes.layout_editor import save_backgrounds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKFLOW = ROOT / "example_workflows" / "lay2story_drawn_layout.json"
RUN_COLOURS = ((0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.1, 0.2, 0.9), (0.9, 0.9, 0.1))


def _layout(step: dict) -> Layout:
    assert step["json"] == step["editor_text"], "the JSON widget and the canvas disagree"
    return Layout.from_json(step["json"])


def _boxes(step: dict, frame: int) -> dict:
    return {s.character: s.box for s in _layout(step).frames[frame]}


@pytest.fixture
def run_records(frontend_server, monkeypatch):
    """A run's four frames (plain colours, 64 px) written by the node's own code into the server's /view folder."""
    module = types.ModuleType("folder_paths")
    module.get_temp_directory = lambda: str(frontend_server.view_dir)
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    images = np.ones((4, 64, 64, 3), dtype=np.float32) * np.asarray(RUN_COLOURS, dtype=np.float32)[:, None, None, :]
    records, _ = save_backgrounds(images)
    return records


@pytest.fixture
def drive(run_driver, run_records):
    return run_driver("drive_editor_dialogue.mjs", workflow=str(WORKFLOW), run_records=run_records,
                      screenshot_dir=os.environ.get("L2S_SCREENSHOT_DIR"))


def _run_story_nodes(prompt: dict) -> dict:
    """The prompt's Character, Story and editor nodes run in-process (ComfyUI's input checks and order)."""
    spec = importlib.util.spec_from_file_location("l2s_node_runner", ROOT / "tests" / "nodes" / "conftest.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    keep = {"L2S_Character", "L2S_Story", "L2S_LayoutEditor"}
    outputs, _, _ = runner.run_prompt({k: v for k, v in prompt.items() if v["class_type"] in keep})
    editor = next(k for k, v in prompt.items() if v["class_type"] == "L2S_LayoutEditor")
    return outputs[editor][1]


def test_editor_cast_dialogue_and_papercuts_in_the_real_frontend(drive, frontend):
    result = drive
    steps, checks, px = result["steps"], result["checks"], result["pixels"]
    for error in result["other_errors"]:
        warnings.warn(f"frontend error not from this pack: {error}", stacklevel=1)
    assert not result["errors"], "\n".join(result["errors"])

    # (e) a new Story node shows every line of its frame prompts; (d) a new editor's hint fits, wrapped, not cut
    defaults = checks["defaults"]
    assert defaults["prompt_lines"] == 4
    assert defaults["prompt_client"] >= defaults["prompt_scroll"], defaults
    assert defaults["hint_scroll"][0] <= defaults["hint_client"][0] and defaults["hint_inside"], defaults
    assert defaults["hint_scroll"][1] <= defaults["hint_client"][1], defaults
    assert defaults["editor_size"][0] == 540 and "Del: delete" in defaults["hint_text"]
    loaded = checks["loaded_story_prompts"]  # a workflow saved with a smaller Story node grows to show them too
    assert loaded["client"] >= loaded["scroll"], loaded

    # 0. one character: a second box is refused; a cast of two Characters: the picker offers both, the box is cat's
    assert steps["one_character_refused"]["status"].startswith("every character already has a box in frame 1")
    connected = steps["cast_connected"]
    assert connected["picker_options"][:2] == ["hero (has a box here)", "cat"]
    assert connected["picker_value"] == "cat" and connected["editor_state"] == "ok"
    second = _boxes(steps["second_box"], 0)
    assert set(second) == {"hero", "cat"} and np.allclose(second["cat"], [0.55, 0.1, 0.9, 0.4], atol=0.012)

    # 2. dialogue: + line with the cat box selected is cat's; typed text, shout; narration; an emptied text is kept
    typed = steps["line_typed"]
    assert typed["dialogue"]["rows"][0]["speaker"] == "cat" and typed["dialogue"]["rows"][0]["text"] == "Look, a kite!"
    assert typed["dialogue"]["rows"][0]["speakers"] == ["", "hero", "cat"]
    assert _layout(typed).dialogue[0] == (DialogueLine("Look, a kite!", "cat", "speech"),)
    assert _layout(steps["two_lines"]).dialogue[0] == (DialogueLine("Look, a kite!", "cat", "shout"),
                                                       DialogueLine("Far away, a storm."))
    emptied = steps["emptied"]
    assert emptied["json"] == steps["two_lines"]["json"] and emptied["status"].startswith("line 2 needs some text")
    edited = _layout(steps["lines_edited"])
    lines = (DialogueLine("Look, a kite!", "cat", "shout"), DialogueLine("Far away, a storm brewed.", None, "caption"))
    assert edited.dialogue == (lines, None, None, None)  # other frames keep the story's lines
    assert json.loads(steps["lines_edited"]["json"])["version"] == 2
    assert steps["lines_edited"]["dialogue"]["label"] == "dialogue, frame 1: 2 lines (replace the story's)"
    assert steps["frame2_lines"]["dialogue"] == {"label": "dialogue, frame 2: 0 lines", "rows": []}

    # ... and the nodes accept what the browser sends: the cast's story with both boxes and the lines
    story = _run_story_nodes(checks["prompt"])
    assert story.character_ids == ("hero", "cat")
    assert [s.character for s in story.frames[0].subjects] == ["hero", "cat"]
    assert story.frames[0].dialogue == lines and story.frames[1].dialogue == ()

    # (a) the status line keeps its height: the canvas does not move for a message or an error
    assert checks["status_quiet"] == ""
    assert checks["status_message"].startswith("every character already has a box in frame 1 (hero, cat)")
    assert checks["rect_quiet"] == checks["rect_message"] == checks["rect_error"] == checks["rect_copy_message"]
    bad = steps["bad_speaker"]
    assert bad["status"] == ("Layout error in frame 1, line 3 (speaker): unknown character 'ghost' (the story has: "
                             "'hero', 'cat')")

    # (c) copy to next frame: hero's own box in frame 2 is kept (and said so), cat's is copied; Ctrl+Z undoes it
    before = _layout(steps["before_copy"])
    assert steps["copied_hero"]["json"] == steps["before_copy"]["json"]
    assert steps["copied_hero"]["status"] == ("kept the box already there (hero in frame 2): delete it there first to "
                                              "replace it")
    assert steps["copied_cat"]["status"] == "copied cat to frame 2"
    copied = _boxes(steps["copied_cat"], 1)
    assert copied["hero"] == before.frames[1][0].box and copied["cat"] == _boxes(steps["before_copy"], 0)["cat"]
    assert _layout(steps["copy_undone"]) == before

    # (b) the run's frames stay behind the boxes when Ctrl+Z rebuilds the node
    red = np.array([round(c * 255) for c in RUN_COLOURS[0]])
    assert np.abs(np.array(px["run_before_undo"][:3]) - red).sum() < 15, px
    assert np.abs(np.array(px["run_after_undo"][:3]) - red).sum() < 15, (px, checks["backgrounds_after_undo"])
    assert len(checks["backgrounds_after_undo"]["run"]) == 4
    assert result["seconds"] < 120, result["timings"]
    print("TIMINGS", frontend[0], round(result["seconds"], 1), result["timings"])
