"""The shared layout-JSON cases (layout_json_cases.json) against the Python side: the schema (Layout.from_json), the
layout editor node (what a run refuses, with the story connected) and the editor's wording of the field path. The
same file is checked against the canvas's JS validation by box_canvas.test.mjs, so the canvas shows an error
exactly when the node refuses the text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lay2story_core.story import Layout, LayoutError, Story
from nodes.layout_editor import L2S_LayoutEditor, editor_location

CASES = json.loads((Path(__file__).with_name("layout_json_cases.json")).read_text(encoding="utf-8"))["cases"]


def case_text(case: dict) -> str:
    return case["text"] if "text" in case else json.dumps(case["layout"], ensure_ascii=False)


def case_story(case: dict) -> Story | None:
    story = case.get("story")
    if story is None:
        return None
    return Story.from_dict({"version": 1, "width": 64, "height": 64,
                            "characters": [{"id": c, "identity": f"the {c}"} for c in story["characters"]],
                            "frames": [{"prompt": p} for p in story["prompts"]]})


def test_the_cases_cover_both_outcomes_and_every_kind_of_field():
    assert len({c["name"] for c in CASES}) == len(CASES)
    valid = [c for c in CASES if c["error"] is None]
    invalid = [c for c in CASES if c["error"] is not None]
    assert len(valid) >= 8 and len(invalid) >= 30
    paths = {re.sub(r"\[\d+\]", "", c["error"]["path"]).split(".")[-1] for c in invalid}
    assert {"<json>", "layout", "version", "frames", "subjects", "character", "box", "caption", "characters"} <= paths
    assert any("duplicate key" in c["error"]["contains"] for c in invalid)
    assert any(c.get("story") for c in invalid) and any(c.get("story") for c in valid)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_python_schema_and_node_agree_with_the_case(case):
    text, story, error = case_text(case), case_story(case), case["error"]
    node = L2S_LayoutEditor()
    if error is None:
        layout = Layout.from_json(text)
        out_layout, merged = node.edit(text, story=story)["result"]
        assert out_layout == layout
        assert (merged is None) == (story is None)
        return
    if story is None:
        with pytest.raises(LayoutError) as info:
            Layout.from_json(text)
        assert info.value.path == error["path"]
        assert error["contains"] in info.value.detail
    else:
        Layout.from_json(text)  # a story problem: the layout itself is fine
    with pytest.raises(ValueError) as info:
        node.edit(text, story=story)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"layout_json: {error['path']}: ")
    assert error["contains"] in message
    assert message.endswith(f"(in the editor: {error['where']})"), message


@pytest.mark.parametrize("case", [c for c in CASES if c["error"]], ids=[c["name"] for c in CASES if c["error"]])
def test_editor_location_names_frames_and_boxes_from_1(case):
    assert editor_location(case["error"]["path"]) == case["error"]["where"]
