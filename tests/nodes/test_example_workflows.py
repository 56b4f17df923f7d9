"""The example workflows: each API-format copy runs in-process on tiny models and gives sensible outputs; the UI
and API copies agree; the files are what the generator script writes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from lay2story_core.story import Layout, Story
from nodes.registry import NODE_CLASS_MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_workflows"
NAMES = ("lay2story_drawn_layout", "lay2story_detected_layout", "training_free_story", "comic_page",
         "lay2story_core_loaders", "training_free_core_loaders", "lay2story_cast_two_characters")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
CORE_WIDGETS = {"SaveImage": ["filename_prefix"], "PreviewImage": [], "UNETLoader": ["unet_name", "weight_dtype"],
                "CLIPLoader": ["clip_name", "type", "device"], "VAELoader": ["vae_name"], "VAEDecode": []}
SIZE = 16  # frames rendered at 16 x 16 px on the tiny models
FAST = {"L2S_StorySampler": {"steps": 2, "width": SIZE, "height": SIZE}}


def load(name: str, api: bool = True) -> dict:
    path = EXAMPLES / "api" / f"{name}.json" if api else EXAMPLES / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def generator():
    spec = importlib.util.spec_from_file_location("make_example_workflows",
                                                  Path(__file__).with_name("make_example_workflows.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def of_type(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if v["class_type"] == class_type]


def test_every_example_has_ui_api_and_thumbnail():
    for name in NAMES:
        assert (EXAMPLES / f"{name}.json").is_file() and (EXAMPLES / "api" / f"{name}.json").is_file()
        from PIL import Image

        with Image.open(EXAMPLES / f"{name}.jpg") as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 512 and min(thumb.size) >= 128
    node_types = {n["type"] for name in NAMES for n in load(name, api=False)["nodes"]}
    assert node_types <= set(NODE_CLASS_MAPPINGS) | set(CORE_WIDGETS)


def ui_to_api(workflow: dict) -> dict:
    """What the ComfyUI frontend sends for a UI-format workflow: widget values mapped to INPUT_TYPES names in order
    (skipping the frontend's control_after_generate value), links as [source id, output slot]."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        inputs = {}
        values = list(node.get("widgets_values", []))
        if node["type"] in CORE_WIDGETS:
            names, controls = CORE_WIDGETS[node["type"]], set()
        else:
            spec = NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()
            declared = {**spec["required"], **spec.get("optional", {})}
            names = [n for n, (kind, _) in declared.items() if isinstance(kind, list) or kind in WIDGET_TYPES]
            controls = {n for n in names if declared[n][1].get("control_after_generate")}
        for name in names:
            inputs[name] = values.pop(0)
            if name in controls:
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
        assert not values, f"node {node['id']}: {len(values)} widget values left over"
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, src, slot, dst, _, kind = links[socket["link"]]
                assert dst == node["id"]
                inputs[socket["name"]] = [str(src), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_copies_agree(name):
    ui, api = load(name, api=False), load(name)
    converted = ui_to_api(ui)
    assert {k: v["class_type"] for k, v in converted.items()} == {k: v["class_type"] for k, v in api.items()}
    for node_id, node in api.items():
        assert converted[node_id]["inputs"] == node["inputs"], f"{name}: node {node_id} differs"
    # link types match the sockets they connect
    by_id = {n["id"]: n for n in ui["nodes"]}
    for _, src, slot, dst, dst_slot, kind in ui["links"]:
        assert by_id[src]["outputs"][slot]["type"] == kind == by_id[dst]["inputs"][dst_slot]["type"]
        assert dst in [by_id[d]["id"] for d in (dst,)]


def test_files_are_what_the_generator_writes(tmp_path):
    generator().write(str(tmp_path), thumbnails=False)
    for name in NAMES:
        for rel in (f"{name}.json", f"api/{name}.json"):
            assert json.loads((tmp_path / rel).read_text()) == json.loads((EXAMPLES / rel).read_text()), (
                f"{rel} is stale: run tests/nodes/make_example_workflows.py")


def test_drawn_layout_example_runs(comfy_models, run_api):
    prompt = load("lay2story_drawn_layout")
    outputs, uis, sinks = run_api(prompt, FAST)
    [editor] = of_type(prompt, "L2S_LayoutEditor")
    layout, story = outputs[editor]
    assert isinstance(layout, Layout) and isinstance(story, Story)
    assert [len(f.subjects) for f in story.frames] == [1, 1, 1, 1]
    assert all(f.subjects[0].box is not None for f in story.frames)
    [sampler] = of_type(prompt, "L2S_StorySampler")
    images, latent, _ = outputs[sampler]
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.std()) > 0
    assert latent["samples"].shape == (4, 4, SIZE // 2, SIZE // 2)
    [save] = of_type(prompt, "SaveImage")
    assert sinks[save]["images"] is images
    [preview] = of_type(prompt, "L2S_LayoutPreview")
    assert outputs[preview][0].shape == (4, 256, 256, 3)  # enlarged for readable labels
    assert len(uis[preview]["images"]) == 4


def test_detected_layout_example_runs(comfy_models, run_api):
    prompt = load("lay2story_detected_layout")
    # the tiny detector is random: threshold 0 keeps its best box in every frame
    outputs, _, sinks = run_api(prompt, {**FAST, "L2S_LayoutDetector": {"box_threshold": 0.0}})
    [detector] = of_type(prompt, "L2S_LayoutDetector")
    layout, preview = outputs[detector]
    assert layout.num_frames == 4 and all(len(frame) == 1 for frame in layout.frames)
    for (subject,) in layout.frames:
        x0, y0, x1, y1 = subject.box
        assert subject.character == "hero" and 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert subject.caption == "the red striped star"
    assert preview.shape == (4, SIZE, SIZE, 3)
    [toggle] = of_type(prompt, "L2S_LayoutToggle")
    story = outputs[toggle][0]
    assert [f.subjects for f in story.frames] == list(layout.frames)
    final = sinks[of_type(prompt, "SaveImage")[0]]["images"]
    draft = outputs[of_type(prompt, "L2S_StorySampler")[0]][0]
    assert final.shape == draft.shape == (4, SIZE, SIZE, 3)
    assert not torch.equal(final, draft)  # other seed and a layout


def test_training_free_example_runs_on_single_files(comfy_models, run_api):
    prompt = load("training_free_story")
    outputs, _, sinks = run_api(prompt, FAST)
    model = outputs[of_type(prompt, "L2S_ModelLoader")[0]][0]
    assert model.subject_branch is None and model.transformer.config.attention_head_dim == 72
    images = sinks[of_type(prompt, "SaveImage")[0]]["images"]
    assert images.shape == (6, SIZE, SIZE, 3)  # 6 frames: identity chunk of 3, then a chunk of 3


def test_comic_page_example_runs(comfy_models, run_api):
    prompt = load("comic_page")
    outputs, _, sinks = run_api(prompt, FAST)
    story = outputs[of_type(prompt, "L2S_StoryFromJSON")[0]][0]
    assert story.num_frames == 6 and story.character_ids == ("hero", "friend")
    pages = {outputs[k][0].shape for k in of_type(prompt, "L2S_ComicPage")}
    classic = sinks[of_type(prompt, "SaveImage")[0]]["images"]
    four = sinks[of_type(prompt, "PreviewImage")[0]]["images"]
    assert classic.shape[0] == 1 and classic.shape[2] > 256  # one page, panels 256 px wide
    assert four.shape[0] == 2 and four.shape[2] == 2 * 256 + 2 * 24 + 12  # 6 frames -> 2 pages of 2 x 2
    assert len(pages) == 2


def test_cast_example_runs(comfy_models, run_api):
    prompt = load("lay2story_cast_two_characters")
    outputs, uis, sinks = run_api(prompt, FAST)
    casts = of_type(prompt, "L2S_Character")
    assert [outputs[k][0].character_ids for k in casts] == [("hero",), ("hero", "friend")]  # chained
    [story_node] = of_type(prompt, "L2S_Story")
    assert outputs[story_node][0].character_ids == ("hero", "friend")
    [editor] = of_type(prompt, "L2S_LayoutEditor")
    layout, story = outputs[editor]
    assert uis[editor]["l2s_characters"] == ["hero", "friend"]
    assert [[s.character for s in f.subjects] for f in story.frames] == [
        ["hero", "friend"], ["hero"], ["friend"], ["hero", "friend"]]
    assert all(s.box is not None for f in story.frames for s in f.subjects)  # a box for each, as drawn
    assert [f.prompt for f in story.frames] == ["on the grass", "in the sky", "on the beach at night", "in a room"]
    images, *_ = outputs[of_type(prompt, "L2S_StorySampler")[0]]
    assert images.shape == (4, SIZE, SIZE, 3) and float(images.std()) > 0
    [page] = of_type(prompt, "L2S_ComicPage")
    assert sinks[of_type(prompt, "SaveImage")[0]]["images"] is outputs[page][0]
    assert outputs[of_type(prompt, "L2S_LayoutPreview")[0]][0].shape[0] == 4
