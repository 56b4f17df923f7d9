"""Property tests: valid stories round-trip losslessly; garbage either parses or raises LayoutError, nothing else."""

import json
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lay2story_core.story import (
    FULL_FRAME,
    Character,
    Frame,
    Layout,
    LayoutError,
    Reference,
    Story,
    Subject,
    rasterize_boxes,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(min_size=1, max_size=24).filter(lambda s: s.strip() and "\x00" not in s)
text = text.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
ids = text.map(str.strip).filter(bool).filter(lambda s: len(s) <= 128)
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
interval = st.lists(unit, min_size=2, max_size=2, unique=True).map(sorted)
boxes = st.tuples(interval, interval).map(lambda xy: (xy[0][0], xy[1][0], xy[0][1], xy[1][1]))
sizes = st.integers(min_value=1, max_value=1024).map(lambda n: n * 8)


@st.composite
def stories(draw):
    char_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    characters = tuple(
        Character(cid, draw(text), draw(st.none() | st.builds(Reference, st.none() | text, st.none() | boxes)))
        for cid in char_ids
    )
    frames = []
    for _ in range(draw(st.integers(1, 6))):
        present = draw(st.permutations(char_ids))[: draw(st.integers(0, len(char_ids)))]
        subjects = tuple(Subject(cid, draw(st.none() | boxes), draw(st.none() | text)) for cid in present)
        frames.append(Frame(draw(text), subjects, draw(st.none() | text)))
    return Story(
        characters,
        tuple(frames),
        width=draw(sizes),
        height=draw(sizes),
        negative_prompt=draw(st.just("") | text),
    )


@SETTINGS
@given(stories())
def test_any_valid_story_round_trips_through_json(story):
    assert Story.from_json(story.to_json()) == story
    assert Story.from_json(story.to_json(indent=None)) == story
    assert Story.from_dict(json.loads(story.to_json())) == story
    assert Layout.from_json(story.layout().to_json()) == story.layout()
    assert story.apply_layout(story.layout()) == story


@SETTINGS
@given(stories())
def test_resolve_frame_invariants(story):
    for i, frame in enumerate(story.frames):
        resolved = story.resolve_frame(i)
        expected = [s.character for s in frame.subjects] or list(story.character_ids)
        assert [r.character for r in resolved] == expected
        caption = story.global_caption(i)
        assert caption.endswith(frame.prompt)
        for r in resolved:
            assert story.characters[r.character_index].id == r.character
        for r, s in zip(resolved, frame.subjects or [Subject(c) for c in story.character_ids]):
            assert (r.box, r.has_box) == ((s.box, True) if s.box is not None else (FULL_FRAME, False))
            assert (r.caption, r.has_caption) == ((s.caption, True) if s.caption is not None else (caption, False))
        off = story.resolve_frame(i, boxes=False, captions=False)
        assert all(not r.has_box and not r.has_caption and r.caption == caption for r in off)


# --------------------------------------------------------------------------------------------------- garbage
KEYS = [
    "version",
    "characters",
    "frames",
    "id",
    "identity",
    "reference",
    "image",
    "box",
    "prompt",
    "subjects",
    "character",
    "caption",
    "width",
    "height",
    "negative_prompt",
    "dialogue",
    "text",
    "speaker",
    "style",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.sampled_from([0, 1, 8, 512, 10**400, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["hero", "", " ", "\ud800", "a\x00"])
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), children, max_size=6)
    ),
    max_leaves=40,
)
top_level = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 2]) | scalars},
    optional={key: json_like for key in ["characters", "frames", "width", "height", "negative_prompt", "extra"]},
)


def _parses_or_layout_error(parse, data):
    try:
        result = parse(data)
    except LayoutError as err:
        assert str(err).startswith(f"{err.path}: ")
        return None
    assert type(result).from_dict(result.to_dict()) == result  # whatever parses is canonical and round-trips
    return result


@SETTINGS
@given(json_like | top_level)
def test_garbage_parses_or_raises_layout_error(data):
    _parses_or_layout_error(Story.from_dict, data)
    _parses_or_layout_error(Layout.from_dict, data)


@SETTINGS
@given(st.text(max_size=60) | st.binary(max_size=30) | json_like.map(lambda d: json.dumps(d, allow_nan=True)))
def test_garbage_text_parses_or_raises_layout_error(text):
    _parses_or_layout_error(Story.from_json, text)
    _parses_or_layout_error(Layout.from_json, text)


def _nodes(data, path=()):
    yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _nodes(value, path + (key,))
    elif isinstance(data, list):
        for k, value in enumerate(data):
            yield from _nodes(value, path + (k,))


@st.composite
def mutated_story_dicts(draw):
    data = draw(stories()).to_dict()
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_nodes(data))
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add_key", "duplicate"]))
        if not path:
            data = draw(json_like) if action == "replace" else data
            continue
        key = path[-1]
        if action == "replace":
            parent[key] = draw(json_like)
        elif action == "delete":
            del parent[key]
        elif action == "add_key" and isinstance(parent[key], dict):
            parent[key][draw(st.sampled_from(KEYS) | st.text(max_size=4))] = draw(json_like)
        elif action == "duplicate" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(json.loads(json.dumps(parent[key][0])))
    return data


@SETTINGS
@given(mutated_story_dicts())
def test_mutated_stories_parse_or_raise_layout_error(data):
    _parses_or_layout_error(Story.from_dict, data)


@SETTINGS
@given(stories(), st.data())
def test_mutated_json_text_parses_or_raises_layout_error(story, data):
    text = story.to_json(indent=None)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 5)))
    junk = data.draw(st.text(alphabet='{}[]",:0123456789.-eE truefalsn\\', max_size=5))
    _parses_or_layout_error(Story.from_json, text[:start] + junk + text[end:])


@SETTINGS
@given(boxes, st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 2]))
def test_rasteriser_never_drops_a_box_and_follows_the_centre_rule(box, gh, gw, patch):
    mask = rasterize_boxes([box], gh * patch, gw * patch, patch)[0]
    assert mask.shape == (gh, gw) and mask.any()
    x0, y0, x1, y1 = box
    cols = torch.tensor([x0 <= (j + 0.5) / gw <= x1 for j in range(gw)])
    rows = torch.tensor([y0 <= (i + 0.5) / gh <= y1 for i in range(gh)])
    rule = rows[:, None] & cols[None, :]
    if rule.any():
        assert torch.equal(mask, rule)
    else:
        assert mask.sum() == 1
        i, j = mask.nonzero()[0].tolist()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        assert j / gw <= cx <= (j + 1) / gw and i / gh <= cy <= (i + 1) / gh
    assert not math.isnan(float(mask.sum()))
