"""The Character node (a cast of any number of characters) and the Story node with a cast: chain order, duplicate
ids, frame-line prefixes, errors that name the input, old Story widget values, and references from the cast
reaching the sampler exactly as the Reference Image node's do."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lay2story_core.story import Cast, Layout, Reference, Story, Subject
from nodes.cast import L2S_Character
from nodes.layout_editor import L2S_LayoutEditor
from nodes.loaders import L2S_ModelLoader, L2S_TextEncoderLoader
from nodes.reference import L2S_ReferenceImage
from nodes.sampler import L2S_StorySampler
from nodes.story_nodes import L2S_Story

EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
PROMPTS = "[hero, cat] on the grass\nin the sky\n\n[cat] in a room"
BOX = (0.25, 0.25, 0.75, 0.75)


def character(character_id="hero", identity="a red striped star", box=(0.0, 0.0, 1.0, 1.0), **kwargs) -> Cast:
    return L2S_Character().build(character_id, identity, *box, **kwargs)[0]


def story(frame_prompts=PROMPTS, cast=None, **kwargs) -> Story:
    args = {"identity": "unused", "frame_prompts": frame_prompts, "negative_prompt": "", "width": 64, "height": 64,
            "character_id": "unused"}
    return L2S_Story().build(**{**args, **kwargs}, cast=cast)[0]


def two() -> Cast:
    return character("cat", "a blue dotted circle", cast=character())


def test_characters_chain_in_order():
    cast = character("owl", "a green square", cast=two())
    assert cast.character_ids == ("hero", "cat", "owl")
    assert [c.identity for c in cast.characters] == ["a red striped star", "a blue dotted circle", "a green square"]
    assert all(c.reference is None for c in cast.characters) and cast.reference_images == ()
    assert character("  fox ").character_ids == ("fox",)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"character_id": "hero", "cast": "hero"}, "^cast: expected an L2S_CAST"),
    ({"character_id": "hero", "cast": "two"}, r"^character_id: 'hero' is already in the cast \(so far: 'hero', "
                                              r"'cat'\)"),
    ({"character_id": ""}, "^character_id: "),
    ({"character_id": 5}, "^character_id: "),
    ({"identity": "  "}, "^identity: must not be empty"),
    ({"identity": "x" * 1001}, "^identity: is 1001 characters, over the limit of 1000$"),
    ({"reference_mask": torch.ones(1, 16, 16)}, "^reference_mask: connect a reference_image too"),
    ({"reference_image": torch.rand(1, 4, 4, 3)}, "^reference_image: 4x4 pixels is too small"),
    ({"reference_image": torch.rand(1, 16, 16, 3), "box": (0.6, 0.0, 0.5, 1.0)}, "^x0/y0/x1/y1: x1 0.5 < x0 0.6"),
    ({"reference_image": torch.rand(1, 16, 16, 3), "reference_mask": torch.zeros(1, 16, 16)},
     "^reference_mask: the mask is empty"),
])
def test_character_errors_name_the_input(kwargs, message):
    if kwargs.get("cast") == "two":
        kwargs["cast"] = two()
    with pytest.raises(ValueError, match=message):
        character(**kwargs)


def test_story_with_a_cast_lists_who_is_in_each_frame():
    built = story(cast=two(), identity="ignored", character_id="ignored")
    assert built.character_ids == ("hero", "cat")  # the cast's; the node's own identity/character_id unused
    assert [f.prompt for f in built.frames] == ["on the grass", "in the sky", "in a room"]
    assert [[s.character for s in f.subjects] for f in built.frames] == [["hero", "cat"], ["hero", "cat"], ["cat"]]
    assert built.global_caption(0) == "a red striped star, a blue dotted circle, on the grass"
    assert built.global_caption(2) == "a blue dotted circle, in a room"
    with pytest.raises(ValueError, match="^cast: no character"):
        story(cast=Cast())
    with pytest.raises(ValueError, match="^cast: expected an L2S_CAST"):
        story(cast={"hero": "a fox"})


@pytest.mark.parametrize(("prompts", "message"), [
    ("on the grass\n[hero]\n[dog] x", r"^frame_prompts: line 2: no prompt after '\[hero\]'"),
    ("a\nb\n[dog] in a room", r"^frame_prompts: line 3: unknown character 'dog' \(known: 'hero', 'cat'\)$"),
    ("[] on the grass", r"^frame_prompts: line 1: empty character list"),
    ("[hero, cat on the grass", r"^frame_prompts: line 1: '\[' without a closing '\]'"),
    ("[hero]] x", None),  # a stray ']' after the prefix is prompt text
    ("\n \n", "^frame_prompts: no frame"),
    ("ok\n" + "y" * 5000, r"^frame_prompts: line 2 \('yyyy.*'\): is 5000 characters, over"),
])
def test_frame_line_errors_name_the_line(prompts, message):
    if message is None:
        assert story(prompts, cast=two()).frames[0].prompt == "] x"
        return
    with pytest.raises(ValueError, match=message):
        story(prompts, cast=two())


def test_old_story_widgets_build_the_same_story():
    """A saved workflow's L2S_Story values (no cast): one character, frames without subjects, as before."""
    old = L2S_Story().build("a red fox", "in a park\nat a lake", "blurry", 512, 256, "hero")[0]
    assert old == Story.from_dict({"version": 1, "width": 512, "height": 256, "negative_prompt": "blurry",
                                   "characters": [{"id": "hero", "identity": "a red fox"}],
                                   "frames": [{"prompt": "in a park"}, {"prompt": "at a lake"}]})
    prefixed = L2S_Story().build("a red fox", "[hero] in a park\nat a lake", "", 512, 256, "hero")[0]
    assert prefixed.frames[0].subjects == (Subject("hero"),) and prefixed.frames[1].subjects == ()
    with pytest.raises(ValueError, match=r"^frame_prompts: line 1: unknown character 'cat' \(known: 'hero'\)"):
        L2S_Story().build("a red fox", "[cat] in a park", "", 512, 256, "hero")


def test_layout_editor_boxes_combine_with_the_prefixes():
    built = story(cast=two())
    layout = Layout(frames=((Subject("hero", (0.0, 0.0, 0.5, 0.5)),), (), (Subject("cat", BOX),)),
                    characters=("hero", "cat"))
    result = L2S_LayoutEditor().edit(layout.to_json(), story=built)
    merged = result["result"][1]
    assert merged.frames[0].subjects == (Subject("hero", (0.0, 0.0, 0.5, 0.5)), Subject("cat"))
    assert merged.frames[1].subjects == (Subject("hero"), Subject("cat"))
    assert merged.frames[2].subjects == (Subject("cat", BOX),)
    assert result["ui"]["l2s_characters"] == ["hero", "cat"]  # what the editor's picker offers


def test_a_reference_picture_travels_with_the_story():
    image = torch.rand(2, 16, 24, 3)
    mask = torch.zeros(1, 16, 24)
    mask[0, 4:12, 6:18] = 1.0
    cast = character("cat", "a blue dotted circle", cast=character(), reference_image=image, reference_mask=mask)
    assert cast.characters[1].reference == Reference(box=(0.25, 0.25, 0.75, 0.75))
    built = story(cast=cast)
    (pair,) = built.reference_images
    assert pair[0] == "cat" and torch.equal(pair[1], image[0].permute(2, 0, 1))
    whole = character(reference_image=image)
    assert whole.characters[0].reference == Reference() and whole.reference_images[0][0] == "hero"


@pytest.fixture
def models(comfy_models):
    (model,) = L2S_ModelLoader().load("lay2story/tiny_pipeline", "auto", "auto", "fp32", "cpu")
    (text_encoder,) = L2S_TextEncoderLoader().load("lay2story/tiny_pipeline", "auto", "fp32", "cpu", True)
    return model, text_encoder


def test_cast_references_reach_the_sampler_as_reference_image_ones(models):
    """The same picture and box through a Character node or a Reference Image node: the same frames."""
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(3))
    args = {"seed": 1, "steps": 2, "cfg": 4.5, "scheduler": "dpmsolver++", "mode": "lay2story", "width": 16,
            "height": 16, "chunk_size": 0, "identity_frames": 0}
    prompts = "in the grass\non a bridge"
    plain = L2S_Story().build("a red fox", prompts, "", 16, 16, "hero")[0]
    (refs,) = L2S_ReferenceImage().build(image, "hero", *BOX)
    expected, *_ = L2S_StorySampler().sample(*models, story=plain, reference=refs, **args)
    cast = character("hero", "a red fox", BOX, reference_image=image)
    with_cast = L2S_Story().build("unused", prompts, "", 16, 16, "unused", cast=cast)[0]
    got, *_ = L2S_StorySampler().sample(*models, story=with_cast, **args)
    assert torch.equal(got, expected)
    without, *_ = L2S_StorySampler().sample(*models, story=plain, **args)
    assert not torch.allclose(without, expected)  # the reference was used
    # a sampler reference for the same character wins over the cast's picture
    (other,) = L2S_ReferenceImage().build(torch.rand(1, 16, 16, 3), "hero", *BOX)
    overridden, *_ = L2S_StorySampler().sample(*models, story=with_cast, reference=other, **args)
    assert torch.equal(overridden, L2S_StorySampler().sample(*models, story=plain, reference=other, **args)[0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompts=st.text(alphabet="[], hercatx\n", max_size=40))
def test_fuzzed_frame_lines_give_a_story_or_one_frame_prompts_error(prompts):
    try:
        built = story(prompts, cast=two())
    except ValueError as err:
        assert str(err).startswith("frame_prompts: ") and "\n" not in str(err), str(err)
        return
    assert built.num_frames == len([line for line in prompts.splitlines() if line.strip()])


def test_cast_template_runs_inside_the_comfyui_standin(comfy_models, monkeypatch, run_api, tmp_path):
    """The two-character template on the ComfyUI stand-in (model management places the models)."""
    from comfy_standin import install

    mm = install(monkeypatch, comfy_models)
    sys.modules["folder_paths"].get_temp_directory = lambda: str(tmp_path / "temp")
    prompt = json.loads((EXAMPLES / "api" / "lay2story_cast_two_characters.json").read_text(encoding="utf-8"))
    outputs, uis, sinks = run_api(prompt, {"L2S_StorySampler": {"steps": 2, "width": 16, "height": 16}})
    (saved,) = sinks.values()
    assert saved["images"].ndim == 4 and torch.isfinite(saved["images"]).all()
    sampled = next(outputs[k][0] for k, v in prompt.items() if v["class_type"] == "L2S_StorySampler")
    assert sampled.shape == (4, 16, 16, 3)
    assert any(c[0] == "load_models_gpu" for c in mm.calls)
