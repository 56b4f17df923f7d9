"""The layout editor as an artist uses it, in the real ComfyUI frontend (drive_story_editor.mjs, Debian's chromium
through playwright-core): the shipped drawn-layout workflow, a second box on a one-character story, a two-character
story read from the graph while editing, the right-click menu, Shift snapping, copies between frames, a run's frames
behind the boxes, a bad box outlined in red, save + reload, 100% / 200% zoom and device scale factor 2. The
two-box layout the browser sends is then run through the sampler node (tiny models, in-process), so a layout the
editor shows as fine is one the sampler accepts."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from lay2story_core.story import Layout, Story
from nodes.layout_editor import save_backgrounds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKFLOW = ROOT / "example_workflows" / "lay2story_drawn_layout.json"
TOL = 0.012
STORY = {
    "version": 1, "width": 64, "height": 64, "negative_prompt": "",
    "characters": [{"id": "hero", "identity": "a red striped star"},
                   {"id": "friend", "identity": "a blue dotted circle"}],
    "frames": [{"prompt": "on the grass"}, {"prompt": "in the sky"}, {"prompt": "on the beach at night"},
               {"prompt": "in a room"}],
}


def _layout(step: dict) -> Layout:
    assert step["json"] == step["editor_text"], "the JSON widget and the canvas disagree"
    return Layout.from_json(step["json"])


def _boxes(step: dict, frame: int) -> dict:
    return {s.character: s.box for s in _layout(step).frames[frame]}


def _close(box, expected, tol=TOL):
    assert box is not None and np.allclose(box, expected, atol=tol), f"box {box} != {expected}"


@pytest.fixture
def run_frames() -> list:
    """The 'sampled frames' of a run: ShapeStory's ground-truth renders of the story with the example's layout."""
    from lay2story_core.shapestory import render_story

    prompt = json.loads((ROOT / "example_workflows" / "api" / "lay2story_drawn_layout.json").read_text())
    text = next(v for v in prompt.values() if v["class_type"] == "L2S_LayoutEditor")["inputs"]["layout_json"]
    return render_story(Story.from_dict(STORY).apply_layout(Layout.from_json(text)), 64, 64)[0]


@pytest.fixture
def run_records(frontend_server, run_frames, monkeypatch):
    """The run's frames written by the node's own code into the server's /view folder."""
    module = types.ModuleType("folder_paths")
    module.get_temp_directory = lambda: str(frontend_server.view_dir)
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    images = np.stack([np.asarray(f, dtype=np.float32) / 255.0 for f in run_frames])
    records, _ = save_backgrounds(images)
    return records


@pytest.fixture
def story_drive(run_driver, run_records, tmp_path):
    shots = os.environ.get("L2S_SCREENSHOT_DIR") or str(tmp_path / "shots")
    os.makedirs(shots, exist_ok=True)
    result = run_driver("drive_story_editor.mjs", workflow=str(WORKFLOW), story=STORY, run_records=run_records,
                        screenshot_dir=shots)
    result["shots"] = shots
    return result


def _run_through_sampler(prompt: dict, tmp_path: Path, monkeypatch) -> dict:
    """Runs an API prompt in-process (ComfyUI's input validation + node order) with the embedded model replaced
    by a tiny one, 1 step at 16 px: the sampler gets exactly the story + layout the editor produced."""
    from tiny_models import make_pipeline

    from lay2story_core.pipelines.loading import save_story_pipeline
    from nodes import comfy_env, model_files

    spec = importlib.util.spec_from_file_location("l2s_node_runner", ROOT / "tests" / "nodes" / "conftest.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    save_story_pipeline(make_pipeline(), tmp_path / "models" / "lay2story" / "tiny")
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    monkeypatch.setenv(comfy_env.MODELS_DIR_ENV, str(tmp_path / "models"))
    monkeypatch.setattr(model_files, "EMBEDDED_MODEL", tmp_path / "models" / "lay2story" / "tiny")
    outputs, _, _ = runner.run_prompt(prompt, {"L2S_StorySampler": {"steps": 1, "width": 16, "height": 16}})
    return outputs


def test_story_aware_editor_in_the_real_frontend(story_drive, run_frames, tmp_path, monkeypatch):
    result = story_drive
    steps, checks, px = result["steps"], result["checks"], result["pixels"]
    for error in result["other_errors"]:
        warnings.warn(f"frontend error not from this pack: {error}", stacklevel=1)
    assert not result["errors"], "\n".join(result["errors"])

    # the shipped workflow: minimum size applied on load, the story's frame prompt under the counter
    loaded = steps["loaded"]
    assert loaded["node_size"][0] >= 540 and loaded["node_size"][1] >= 500
    assert loaded["label"] == "frame 1 / 4" and loaded["prompt"] == "\u201con the grass\u201d"
    assert loaded["editor_state"] == "ok"
    assert loaded["picker_label"] == "next box:" and loaded["picker_value"] == ""
    assert loaded["caption_disabled"] and loaded["caption_placeholder"] == "select a box to caption it"
    assert "+ new character\u2026" not in loaded["picker_options"]  # the story decides the characters
    assert checks["preview_node_size"][0] >= 420 and checks["preview_node_size"][1] >= 480
    assert checks["hover_title"] == "hero: the red striped star, medium, at the bottom left"

    # a second box on a one-character story: refused with a reason, no phantom character, JSON unchanged
    refused = steps["second_box_refused"]
    assert refused["json"] == loaded["json"]
    assert _layout(refused).characters == ("hero",)
    assert refused["status"].startswith("every character already has a box in frame 1 (hero)")
    assert "character" not in json.dumps(json.loads(refused["json"])["characters"])

    # a two-character story connected while editing: its characters join, the new box takes the free one
    assert _layout(steps["story_connected"]).characters == ("hero", "friend")
    second = steps["second_box"]
    assert second["editor_state"] == "ok" and second["picker_label"] == "box:"
    boxes = _boxes(second, 0)
    _close(boxes["friend"], [0.55, 0.1, 0.9, 0.4])
    assert boxes["hero"] == (0.08, 0.45, 0.48, 0.85)
    assert _layout(second).characters == ("hero", "friend")

    # ... and the sampler accepts what the browser sends (ComfyUI's validation, the editor, the sampler)
    prompt = checks["two_box_prompt"]
    outputs = _run_through_sampler(prompt, tmp_path, monkeypatch)
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "L2S_StorySampler")
    editor = next(k for k, v in prompt.items() if v["class_type"] == "L2S_LayoutEditor")
    assert outputs[sampler][0].shape == (4, 16, 16, 3)
    merged = outputs[editor][1]
    assert [s.character for s in merged.frames[0].subjects] == ["hero", "friend"]

    # right-click menu: copy to all frames, full frame, a taken character stays disabled, delete
    assert checks["menu_copy-all"][:5] == ["delete", "duplicate", "copy-next", "copy-all", "full-frame"]
    copied = _layout(steps["copied_to_all"])
    for f in range(4):
        _close({s.character: s.box for s in copied.frames[f]}["friend"], [0.55, 0.1, 0.9, 0.4])
    assert steps["page_down"]["label"] == "frame 3 / 4"
    assert steps["page_down"]["prompt"] == "\u201con the beach at night\u201d"
    assert _boxes(steps["full_frame"], 2)["friend"] == (0.0, 0.0, 1.0, 1.0)
    assert steps["character_taken"]["json"] == steps["full_frame"]["json"]
    assert list(_boxes(steps["menu_deleted"], 2)) == ["hero"]

    # copy from the previous frame: frame 2's boxes into frame 3, never over frame 3's own (hero's is kept, said so)
    prev = _layout(steps["copied_prev"])
    before = _layout(steps["menu_deleted"])
    assert {s.character: s.box for s in prev.frames[2]} == {
        **{s.character: s.box for s in prev.frames[1]}, **{s.character: s.box for s in before.frames[2]}}
    assert steps["copied_prev"]["status"] == ("copied friend to frame 3; kept the box already there (hero in frame "
                                              "3): delete it there first to replace it")

    # Shift snaps to the 1/8 grid (and keeps the size); without Shift nothing snaps
    free = _boxes(steps["moved_free"], 0)["hero"]
    assert abs(free[0] - 0.1325) < 0.006 and free[0] != 0.125
    snapped = _boxes(steps["moved_snapped"], 0)["hero"]
    assert snapped[0] == 0.125 and abs((snapped[2] - snapped[0]) - 0.4) < 1e-4
    assert abs(snapped[1] - 0.45) < 0.006 or snapped[3] == 0.875
    assert _boxes(steps["resized_snapped"], 0)["friend"][0] == 0.5
    assert re.fullmatch(r"x \d+ y \d+ w \d+ h \d+ px", checks["readout_while_dragging"])

    # a run's frames behind the boxes, per frame
    sources = [np.array(f.getpixel((62, 2)), dtype=int) for f in run_frames[:2]]
    assert np.abs(sources[0] - sources[1]).sum() > 40  # the two frames differ there
    for k, name in enumerate(("run_frame1", "run_frame2")):
        shown = np.array(px[name][:3], dtype=int)
        assert np.abs(shown - sources[k]).sum() < 15 < np.abs(shown - sources[1 - k]).sum(), (name, shown, sources)

    # sharp at any zoom: backing store = on-screen size x devicePixelRatio
    for name in ("100", "200"):
        s = checks[f"sharpness_{name}"]
        assert abs(s["backing"][0] - s["screen"][0] * s["dpr"]) <= 1, s
    assert checks["sharpness_200"]["backing"][0] >= 1.9 * checks["sharpness_100"]["backing"][0]
    for name in ("100", "200"):
        assert (Path(result["shots"]) / f"layout_editor_zoom_{name}.png").is_file()

    # a character the story lacks: error in the UI's numbering, the box outlined in red
    ghost = steps["ghost"]
    assert ghost["editor_state"] == "error"
    assert ghost["status"] == ("Layout error in frame 1, box 3 (character): unknown character 'ghost' "
                               "(the story has: 'hero', 'friend')")
    assert checks["ghost_red_pixels"] > 100 and checks["ok_red_pixels"] < 10

    # save + reload restores the layout, the story link and the editor's reading of it
    reloaded = steps["reloaded"]
    assert _layout(reloaded) == _layout(steps["resized_snapped"]) or reloaded["json"] == checks["reloaded_prompt"][
        editor]["inputs"]["layout_json"]
    assert reloaded["prompt"] == "\u201con the grass\u201d" and reloaded["editor_state"] == "ok"
    assert reloaded["node_size"][0] >= 540
    assert checks["reloaded_prompt"][editor]["inputs"]["story"] == prompt[editor]["inputs"]["story"]

    # device scale factor 2 at ComfyUI zoom 1.5: backing 3x, boxes where the JSON says, drawing lands right
    s = checks["hidpi_sharpness"]
    assert s["dpr"] == 2 and abs(s["backing"][0] - 2 * s["screen"][0]) <= 1
    hp = px["hidpi"]
    plain = hp["outside_left"][:3]
    for side in ("left", "right", "top", "bottom"):
        assert hp[f"outside_{side}"][:3] == plain, (side, hp)
        assert hp[f"inside_{side}"][:3] != plain, (side, hp)
    _close(_boxes(steps["hidpi_drawn"], 1)["hero"], [0.1, 0.15, 0.45, 0.8])
    assert result["seconds"] < 120, result["timings"]
