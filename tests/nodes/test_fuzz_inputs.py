"""Fuzzed node inputs (Hypothesis): layout JSON, story JSON and story text, reference images and masks. Every call
either returns a value of the node's type or raises a ValueError (the project's errors: LayoutError is one) whose
message is one line starting with the input's name; nothing else escapes into the ComfyUI server."""

from __future__ import annotations

import json

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lay2story_core.pipelines import ReferenceImage
from lay2story_core.story import Layout, Story
from nodes.layout_editor import L2S_LayoutEditor, L2S_LayoutFromJSON
from nodes.reference import L2S_ReferenceImage
from nodes.story_nodes import DEFAULT_STORY_JSON, L2S_Story, L2S_StoryFromJSON

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=6)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["version", "characters", "frames", "subjects", "character", "box", "caption", "id",
                     "identity", "prompt", "width", "height", "x"]), inner, max_size=4), max_leaves=12)


def _expect(call, returns: type | tuple, field: str):
    try:
        result = call()
    except ValueError as err:
        message = str(err)
        assert message.startswith(field) and "\n" not in message.strip(), message
        return None
    assert isinstance(result, returns), result
    return result


def _mutated(base: dict, draw) -> str:
    """``base`` with a random part replaced by random JSON, as text."""
    data = json.loads(json.dumps(base))
    node = data
    for _ in range(draw(st.integers(0, 3))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if isinstance(node[key], (dict, list)) and node[key]:
                node = node[key]
                continue
            node[key] = draw(json_values)
            break
        if isinstance(node, list) and node:
            i = draw(st.integers(0, len(node) - 1))
            if isinstance(node[i], (dict, list)) and node[i]:
                node = node[i]
                continue
            node[i] = draw(json_values)
            break
    return json.dumps(data, allow_nan=True)


LAYOUT = {"version": 1, "characters": ["hero"],
          "frames": [{"subjects": [{"character": "hero", "box": [0.1, 0.2, 0.5, 0.9], "caption": "running"}]},
                     {"subjects": []}]}


@SETTINGS
@given(data=st.data())
def test_layout_json_nodes(data):
    text = data.draw(st.one_of(st.text(max_size=40), st.builds(lambda: None).flatmap(
        lambda _: st.just(_mutated(LAYOUT, data.draw))), json_values.map(json.dumps)))
    _expect(lambda: L2S_LayoutFromJSON().parse(text)[0], Layout, "layout_json")
    _expect(lambda: L2S_LayoutEditor().edit(text)["result"][0], Layout, "layout_json")


@SETTINGS
@given(data=st.data())
def test_story_json_node(data):
    base = json.loads(DEFAULT_STORY_JSON)
    text = data.draw(st.one_of(st.text(max_size=40), st.just(None).map(lambda _: _mutated(base, data.draw)),
                               json_values.map(json.dumps)))
    _expect(lambda: L2S_StoryFromJSON().parse(text)[0], Story, "story_json")


story_text = st.text(max_size=60) | st.just("x" * 1001) | st.just("line\n" * 300)


@SETTINGS
@given(identity=story_text, prompts=story_text, negative=story_text,
       width=st.integers(-16, 9000), height=st.integers(-16, 9000), character_id=story_text | st.integers())
def test_story_node(identity, prompts, negative, width, height, character_id):
    story = _expect(lambda: L2S_Story().build(identity, prompts, negative, width, height, character_id)[0], Story,
                    ("identity", "frame_prompts", "negative_prompt", "width", "height", "character_id", "story"))
    if story is not None:
        assert story.num_frames >= 1 and story.characters[0].identity == identity
        assert len(identity) <= 1000 and len(negative) <= 1000  # the schema's caption limit, as for story files


special = st.sampled_from([0.0, 1.0, 0.5, -0.5, 1.5, 255.0, float("nan"), float("inf"), -float("inf"), 1.005])


@st.composite
def tensors(draw, ndims: tuple[int, ...]):
    ndim = draw(st.sampled_from(ndims))
    shape = tuple(draw(st.lists(st.integers(0, 12), min_size=ndim, max_size=ndim)))
    if ndim == 4 and draw(st.integers(0, 3)):
        shape = shape[:3] + (draw(st.sampled_from([1, 3, 4, 2])),)
    values = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    if values.numel() and draw(st.booleans()):
        values.view(-1)[draw(st.integers(0, values.numel() - 1))] = draw(special)
    if draw(st.booleans()):
        values = values * draw(special)
    return values.numpy() if draw(st.booleans()) else values


@SETTINGS
@given(image=tensors((2, 3, 4, 5)), mask=st.none() | tensors((1, 2, 3)),
       character_id=st.sampled_from(["hero", "cat"]) | st.text(max_size=8),
       box=st.sampled_from([(0.0, 0.0, 1.0, 1.0), (0.1, 0.2, 0.6, 0.9)]) | st.lists(
           st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4))
def test_reference_node(image, mask, character_id, box):
    refs = _expect(lambda: L2S_ReferenceImage().build(image, character_id, *box, mask=mask)[0], dict,
                   ("image", "mask", "character_id", "x0/y0/x1/y1"))
    if refs is not None:  # accepted: then the input was a real 0..1 picture (nothing silently repaired)
        given = torch.as_tensor(image).float()
        given = given if given.ndim == 4 else given[None]
        assert torch.isfinite(given[..., :3]).all() and given.min() >= -0.01 and given.max() <= 1.01
        (ref,) = refs.values()
        assert isinstance(ref, ReferenceImage) and torch.isfinite(ref.image).all()
        assert 0.0 <= float(ref.image.min()) and float(ref.image.max()) <= 1.0
        assert ref.image.shape[1] >= 8 and ref.image.shape[2] >= 8
        if mask is not None:
            assert tuple(np.shape(mask))[-2:] == tuple(ref.image.shape[1:])
