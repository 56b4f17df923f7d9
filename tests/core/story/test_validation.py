import math
import pickle
import re

import pytest

from lay2story_core.story import (
    DEFAULT_MAX_CAPTION_CHARS,
    Character,
    Frame,
    Layout,
    LayoutError,
    Reference,
    Story,
    Subject,
)


def _set(key_path, value):
    def mutate(d):
        *parents, last = key_path
        for key in parents:
            d = d[key]
        d[last] = value

    return mutate


def _delete(key_path):
    def mutate(d):
        *parents, last = key_path
        for key in parents:
            d = d[key]
        del d[last]

    return mutate


F0S0 = ("frames", 0, "subjects", 0)
LONG = "x" * (DEFAULT_MAX_CAPTION_CHARS + 1)

# (mutation, expected path, regex the detail must match, expected .value or ... to skip)
CASES = {
    "missing version": (_delete(("version",)), "version", "missing required field", None),
    "unknown version": (
        _set(("version",), 3), "version", r"unsupported schema version int 3 \(this code reads 1 or 2\)", 3),
    "version is a string": (_set(("version",), "1"), "version", r"unsupported schema version str '1'", "1"),
    "version is a bool": (_set(("version",), True), "version", r"unsupported schema version bool True", True),
    "missing characters": (_delete(("characters",)), "characters", "missing required field", None),
    "missing frames": (_delete(("frames",)), "frames", "missing required field", None),
    "unknown top-level key": (
        _set(("frame",), []),
        "story",
        r"unknown key\(s\) 'frame'.*did you mean 'frame' -> 'frames'\?",
        "frame",
    ),
    "unknown subject key": (
        _set(F0S0 + ("bbox",), [0, 0, 1, 1]),
        "frames[0].subjects[0]",
        r"unknown key\(s\) 'bbox' \(allowed: box, caption, character\)",
        "bbox",
    ),
    "unknown reference key": (
        _set(("characters", 0, "reference", "img"), "a.png"),
        "characters[0].reference",
        r"unknown key\(s\) 'img'",
        "img",
    ),
    "unknown frame key": (
        _set(("frames", 1, "promt"), "p"),
        "frames[1]",
        r"unknown key\(s\) 'promt'.*'prompt'",
        "promt",
    ),
    "frame missing prompt": (_delete(("frames", 2, "prompt")), "frames[2].prompt", "missing required field", None),
    "character missing identity": (
        _delete(("characters", 1, "identity")),
        "characters[1].identity",
        "missing required field",
        None,
    ),
    "subject missing character": (
        _delete(F0S0 + ("character",)),
        "frames[0].subjects[0].character",
        "missing required field",
        None,
    ),
    "characters not a list": (
        _set(("characters",), {"id": "a"}),
        "characters",
        "expected a list of characters, got dict",
        ...,
    ),
    "frames is a string": (_set(("frames",), "abc"), "frames", "expected a list of frames, got str 'abc'", "abc"),
    "frame not an object": (
        _set(("frames", 1), ["p"]),
        "frames[1]",
        r"expected a JSON object, got list \['p'\]",
        ["p"],
    ),
    "subjects not a list": (
        _set(("frames", 1, "subjects"), "hero"),
        "frames[1].subjects",
        "expected a list of subjects, got str 'hero'",
        "hero",
    ),
    "box not a list": (
        _set(F0S0 + ("box",), "0,0,1,1"),
        "frames[0].subjects[0].box",
        r"expected a list of 4 numbers \[x0, y0, x1, y1\], got str '0,0,1,1'",
        "0,0,1,1",
    ),
    "box of 3 numbers": (
        _set(F0S0 + ("box",), [0, 0, 1]),
        "frames[0].subjects[0].box",
        "expected 4 numbers .* got 3",
        [0, 0, 1],
    ),
    "box with a bool": (
        _set(F0S0 + ("box",), [0, 0, True, 1]),
        "frames[0].subjects[0].box",
        "x1 is not a number: bool True",
        ...,
    ),
    "box with a string": (
        _set(F0S0 + ("box",), [0, "0", 1, 1]),
        "frames[0].subjects[0].box",
        "y0 is not a number: str '0'",
        ...,
    ),
    "box with NaN": (
        _set(F0S0 + ("box",), [0, 0, math.nan, 1]),
        "frames[0].subjects[0].box",
        "x1 must be finite, got nan",
        ...,
    ),
    "box with inf": (
        _set(F0S0 + ("box",), [0, 0, 1, math.inf]),
        "frames[0].subjects[0].box",
        "y1 must be finite, got inf",
        ...,
    ),
    "box with a huge int": (
        _set(F0S0 + ("box",), [0, 0, 10**400, 1]),
        "frames[0].subjects[0].box",
        "x1 is not representable as a float",
        ...,
    ),
    "box outside [0,1]": (
        _set(F0S0 + ("box",), [0.1, 0.2, 1.5, 0.9]),
        "frames[0].subjects[0].box",
        r"x1 1\.5 is outside \[0, 1\]",
        [0.1, 0.2, 1.5, 0.9],
    ),
    "box just beyond epsilon": (
        _set(F0S0 + ("box",), [-0.0011, 0.2, 0.5, 0.9]),
        "frames[0].subjects[0].box",
        r"x0 -0\.0011 is outside \[0, 1\]",
        ...,
    ),
    "inverted box": (
        _set(F0S0 + ("box",), [0.7, 0.1, 0.2, 0.9]),
        "frames[0].subjects[0].box",
        r"^x1 0\.2 < x0 0\.7$",
        [0.7, 0.1, 0.2, 0.9],
    ),
    "inverted box y": (
        _set(F0S0 + ("box",), [0.1, 0.9, 0.2, 0.1]),
        "frames[0].subjects[0].box",
        r"^y1 0\.1 < y0 0\.9$",
        ...,
    ),
    "zero-area box": (
        _set(F0S0 + ("box",), [0.3, 0.1, 0.3, 0.9]),
        "frames[0].subjects[0].box",
        r"x1 0\.3 == x0 0\.3 \(zero width\)",
        ...,
    ),
    "zero-height reference box": (
        _set(("characters", 0, "reference", "box"), [0.1, 0.5, 0.9, 0.5]),
        "characters[0].reference.box",
        r"zero height",
        ...,
    ),
    "unknown character in subject": (
        _set(F0S0 + ("character",), "heroine"),
        "frames[0].subjects[0].character",
        r"unknown character 'heroine' \(known: 'hero', 'villain'\)",
        "heroine",
    ),
    "duplicate character id": (
        _set(("characters", 1, "id"), "hero"),
        "characters[1].id",
        r"duplicate character id 'hero' \(also characters\[0\]\)",
        "hero",
    ),
    "same character twice in a frame": (
        _set(("frames", 1, "subjects", 0, "character"), "hero"),
        "frames[1].subjects[1].character",
        r"character 'hero' appears twice in this frame \(also frames\[1\]\.subjects\[0\]\)",
        "hero",
    ),
    "empty character list": (_set(("characters",), []), "characters", "must list at least one character", []),
    "empty frame list": (_set(("frames",), []), "frames", "must list at least one frame", []),
    "caption too long": (
        _set(F0S0 + ("caption",), LONG),
        "frames[0].subjects[0].caption",
        f"is {len(LONG)} characters, over the limit of {DEFAULT_MAX_CAPTION_CHARS}",
        LONG,
    ),
    "prompt too long": (_set(("frames", 2, "prompt"), LONG), "frames[2].prompt", "over the limit of 1000", LONG),
    "identity too long": (_set(("characters", 0, "identity"), LONG), "characters[0].identity", "over the limit", LONG),
    "negative prompt too long": (_set(("negative_prompt",), LONG), "negative_prompt", "over the limit", LONG),
    "caption not a string": (
        _set(F0S0 + ("caption",), 5),
        "frames[0].subjects[0].caption",
        "expected a string, got int 5",
        5,
    ),
    "prompt not a string": (
        _set(("frames", 0, "prompt"), ["a"]),
        "frames[0].prompt",
        r"expected a string, got list",
        ["a"],
    ),
    "identity not a string": (
        _set(("characters", 0, "identity"), None),
        "characters[0].identity",
        "expected a string, got NoneType None",
        None,
    ),
    "id not a string": (_set(("characters", 0, "id"), 7), "characters[0].id", "expected a string, got int 7", 7),
    "empty identity": (
        _set(("characters", 0, "identity"), "  "),
        "characters[0].identity",
        "must not be empty, got '  '",
        "  ",
    ),
    "empty prompt": (_set(("frames", 1, "prompt"), ""), "frames[1].prompt", "must not be empty, got ''", ""),
    "blank prompt": (_set(("frames", 1, "prompt"), " \n\t"), "frames[1].prompt", "must not be empty", " \n\t"),
    "empty id": (_set(("characters", 0, "id"), ""), "characters[0].id", "must not be empty", ""),
    "id with whitespace": (
        _set(("characters", 0, "id"), " hero"),
        "characters[0].id",
        "must not start or end with whitespace, got ' hero'",
        " hero",
    ),
    "empty image path": (_set(("frames", 0, "image"), ""), "frames[0].image", "must not be empty", ""),
    "image path with NUL": (
        _set(("characters", 0, "reference", "image"), "a\x00b"),
        "characters[0].reference.image",
        "NUL character",
        "a\x00b",
    ),
    "width not an int": (_set(("width",), 512.0), "width", "expected an integer, got float 512.0", 512.0),
    "width a bool": (_set(("width",), True), "width", "expected an integer, got bool True", True),
    "width zero": (_set(("width",), 0), "width", "must be >= 8, got 0", 0),
    "height negative": (_set(("height",), -64), "height", "must be >= 8, got -64", -64),
    "height not a multiple of 8": (_set(("height",), 500), "height", "must be a multiple of 8, got 500", 500),
    "width too large": (_set(("width",), 8200), "width", "must be <= 8192, got 8200", 8200),
    "reference not an object": (
        _set(("characters", 0, "reference"), "ref.png"),
        "characters[0].reference",
        "expected a JSON object, got str 'ref.png'",
        "ref.png",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_invalid_input_names_path_and_value(story_dict, name):
    mutate, path, detail, value = CASES[name]
    mutate(story_dict)
    with pytest.raises(LayoutError) as info:
        Story.from_dict(story_dict)
    err = info.value
    assert err.path == path
    assert re.search(detail, err.detail), err.detail
    assert str(err) == f"{path}: {err.detail}"
    if value is not ...:
        assert err.value == value


@pytest.mark.parametrize("data", [None, [], "story", 3, 1.5])
def test_not_a_dict(data):
    with pytest.raises(LayoutError, match=r"^story: expected a JSON object, got"):
        Story.from_dict(data)


def test_newer_version_reported_before_unknown_keys(story_dict):
    story_dict["version"] = 3
    story_dict["scenes"] = []
    with pytest.raises(LayoutError, match="^version: unsupported schema version int 3"):
        Story.from_dict(story_dict)


def test_max_frames(story_dict):
    with pytest.raises(LayoutError, match=r"^frames: 3 frames exceed the limit of 2$"):
        Story.from_dict(story_dict, max_frames=2)
    assert Story.from_dict(story_dict, max_frames=3).num_frames == 3
    with pytest.raises(LayoutError, match="^max_frames: must be >= 1, got 0"):
        Story.from_dict(story_dict, max_frames=0)


def test_max_caption_chars(story_dict):
    story_dict["frames"][0]["prompt"] = "z" * 30
    with pytest.raises(LayoutError, match=r"^frames\[0\]\.prompt: is 30 characters, over the limit of 29$"):
        Story.from_dict(story_dict, max_caption_chars=29)
    story_dict["frames"][0]["prompt"] = "ok"
    story_dict["frames"][0]["subjects"][0]["caption"] = "y" * 30
    with pytest.raises(LayoutError, match=r"^frames\[0\]\.subjects\[0\]\.caption: is 30 characters"):
        Story.from_dict(story_dict, max_caption_chars=29)
    assert Story.from_dict(story_dict, max_caption_chars=30).frames[0].subjects[0].caption == "y" * 30


def test_json_syntax_errors_give_line_and_column():
    with pytest.raises(LayoutError) as info:
        Story.from_json('{\n  "version": 1,\n  "frames": [,]\n}')
    assert info.value.path == "<json>"
    assert str(info.value).startswith("<json>: invalid JSON at line 3 column 14:")


@pytest.mark.parametrize(
    "text, detail",
    [
        ('{"version": 1, "version": 1}', "duplicate key 'version'"),
        ("[" * 100_000, "nested too deeply"),
        ('{"width": ' + "9" * 5000 + "}", "invalid JSON"),
        ("", "invalid JSON at line 1 column 1"),
    ],
)
def test_json_oddities(text, detail):
    with pytest.raises(LayoutError, match=detail) as info:
        Story.from_json(text)
    assert info.value.path == "<json>"


def test_json_non_text():
    with pytest.raises(LayoutError, match=r"^<json>: expected JSON text \(str\), got dict"):
        Story.from_json({"version": 1})


def test_direct_construction_validates_too():
    hero = Character("hero", "a fox")
    with pytest.raises(LayoutError, match=r"^subject\.box: x1 0\.1 < x0 0\.5"):
        Subject("hero", (0.5, 0.0, 0.1, 1.0))
    with pytest.raises(LayoutError, match=r"^frames\[0\]\.subjects\[0\]\.character: unknown character 'wolf'"):
        Story((hero,), (Frame("p", (Subject("wolf"),)),))
    with pytest.raises(LayoutError, match=r"^frame\.subjects\[1\]\.character: character 'hero' appears twice"):
        Frame("p", (Subject("hero"), Subject("hero")))
    with pytest.raises(LayoutError, match=r"^frames\[0\]: expected a Frame, got dict"):
        Story((hero,), ({"prompt": "p"},))
    with pytest.raises(LayoutError, match=r"^character\.reference: expected a Reference or None, got str"):
        Character("hero", "a fox", "ref.png")
    with pytest.raises(LayoutError, match=r"^width: must be a multiple of 8, got 100"):
        Story((hero,), (Frame("p"),), width=100)
    with pytest.raises(LayoutError, match=r"^version: unsupported schema version int 3"):
        Story((hero,), (Frame("p"),), version=3)
    story = Story([hero], [Frame("p", [Subject("hero", [0, 0, 1, 1])])])  # lists are normalised to tuples
    assert story.characters == (hero,) and story.frames[0].subjects[0].box == (0.0, 0.0, 1.0, 1.0)
    assert hash(story) == hash(Story.from_dict(story.to_dict()))
    assert Reference(box=[0.1, 0.1, 0.2, 0.2]).box == (0.1, 0.1, 0.2, 0.2)


def test_layout_error_is_a_value_error_and_pickles():
    err = LayoutError("frames[3].subjects[0].box", "x1 0.2 < x0 0.7", [0.7, 0, 0.2, 1])
    assert isinstance(err, ValueError)
    assert str(err) == "frames[3].subjects[0].box: x1 0.2 < x0 0.7"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.detail, copy.value, str(copy)) == (err.path, err.detail, err.value, str(err))


def test_layout_validation_paths():
    good = {"version": 1, "characters": ["hero"], "frames": [{"subjects": [{"character": "hero"}]}, {"subjects": []}]}
    assert Layout.from_dict(good).num_frames == 2
    cases = [
        (
            {**good, "frames": [{}, {"subjects": [{"character": "hero", "box": [0.5, 0, 0.4, 1]}]}]},
            r"^layout\.frames\[1\]\.subjects\[0\]\.box: x1 0\.4 < x0 0\.5$",
        ),
        (
            {**good, "frames": [{"subjects": [{"character": "a"}, {"character": "a"}]}]},
            r"^layout\.frames\[0\]\.subjects\[1\]\.character: character 'a' appears twice",
        ),
        ({**good, "frames": [{"subject": []}]}, r"^layout\.frames\[0\]: unknown key\(s\) 'subject'"),
        (
            {**good, "frames": [{"subjects": [{"character": "a", "caption": 3}]}]},
            r"^layout\.frames\[0\]\.subjects\[0\]\.caption: expected a string, got int 3",
        ),
        ({**good, "characters": ["a", "a"]}, r"^layout\.characters\[1\]: duplicate character id 'a'"),
        ({**good, "characters": "hero"}, r"^layout\.characters: expected a list of ids, got str"),
        ({**good, "version": 0}, r"^layout\.version: unsupported schema version int 0"),
        ({"frames": []}, r"^layout\.version: missing required field"),
        ({**good, "prompts": []}, r"^layout: unknown key\(s\) 'prompts'"),
        ({**good, "frames": [{}] * 3}, r"^layout\.frames: 3 frames exceed the limit of 2"),
        ([], r"^layout: expected a JSON object, got list"),
    ]
    for data, pattern in cases:
        with pytest.raises(LayoutError, match=pattern):
            Layout.from_dict(data, max_frames=2)
