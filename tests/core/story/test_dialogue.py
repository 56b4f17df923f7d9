"""Dialogue lines (schema version 2): the DialogueLine class, frames and stories that carry them, version-1 data
still reading unchanged, and the layout editor's document carrying (and replacing) a frame's lines."""

import copy

import pytest

from lay2story_core.story import (
    DIALOGUE_STYLES,
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    Character,
    DialogueLine,
    Frame,
    Layout,
    LayoutError,
    Story,
)

LINES = ("frames", 2, "dialogue")


def _v1(story_dict):
    data = copy.deepcopy(story_dict)
    data["version"] = 1
    for frame in data["frames"]:
        frame.pop("dialogue", None)
    return data


def test_versions_and_styles():
    assert SCHEMA_VERSION == 2 and SUPPORTED_VERSIONS == (1, 2)
    assert DIALOGUE_STYLES == ("speech", "thought", "shout", "caption")


def test_style_defaults_to_speech_for_a_speaker_and_caption_for_narration():
    assert DialogueLine("Hi", "hero").style == "speech"
    assert DialogueLine("Meanwhile...").style == "caption"
    assert DialogueLine("Hmm", "hero", "thought") == DialogueLine.from_dict(
        {"text": "Hmm", "speaker": "hero", "style": "thought"})
    assert DialogueLine.from_dict({"text": "x", "speaker": None, "style": None}) == DialogueLine("x")
    assert DialogueLine("Run!", "hero", "shout").to_dict() == {"text": "Run!", "speaker": "hero", "style": "shout"}
    assert DialogueLine("Later").to_dict() == {"text": "Later", "style": "caption"}


def test_story_with_dialogue_round_trips(story_dict):
    story = Story.from_dict(story_dict)
    assert story.frames[2].dialogue == (DialogueLine("Pass the salt.", "villain"),
                                        DialogueLine("And so they became friends."))
    assert story.frames[0].dialogue == ()
    assert story.to_dict() == story_dict
    assert "dialogue" not in story.to_dict()["frames"][0]  # written only when a frame has lines
    assert Story.from_json(story.to_json()) == story


def test_version_1_story_loads_unchanged_and_is_written_as_version_2(story_dict):
    old = _v1(story_dict)
    story = Story.from_dict(old)
    assert story.version == SCHEMA_VERSION == 2
    assert story.to_dict() == {**old, "version": 2}
    assert all(frame.dialogue == () for frame in story.frames)


def test_version_1_story_with_dialogue_names_the_field(story_dict):
    story_dict["version"] = 1
    with pytest.raises(LayoutError) as info:
        Story.from_dict(story_dict)
    assert info.value.path == "frames[2].dialogue"
    assert "needs schema version 2" in info.value.detail and "version 1" in info.value.detail
    with pytest.raises(LayoutError, match=r"^frames\[0\]\.dialogue: dialogue needs schema version 2"):
        Story((Character("hero", "a fox"),), (Frame("p", dialogue=(DialogueLine("Hi"),)),), version=1)


def _set(data, path, value):
    *parents, last = path
    for key in parents:
        data = data[key]
    data[last] = value


@pytest.mark.parametrize(
    "path, value, where, detail",
    [
        (LINES + (0, "speaker"), "wolf", "frames[2].dialogue[0].speaker",
         "unknown character 'wolf' (known: 'hero', 'villain')"),
        (LINES + (1, "style"), "yell", "frames[2].dialogue[1].style",
         "unknown style 'yell' (allowed: speech, thought, shout, caption)"),
        (LINES + (1, "style"), 3, "frames[2].dialogue[1].style", "expected a string, got int 3"),
        (LINES + (0, "text"), "  ", "frames[2].dialogue[0].text", "must not be empty, got '  '"),
        (LINES + (0, "text"), "x" * 1001, "frames[2].dialogue[0].text", "is 1001 characters, over the limit of 1000"),
        (LINES + (0, "text"), None, "frames[2].dialogue[0].text", "expected a string, got NoneType None"),
        (LINES + (0, "speaker"), " hero", "frames[2].dialogue[0].speaker", "must not start or end with whitespace"),
        (LINES + (0, "said"), "x", "frames[2].dialogue[0]", "unknown key(s) 'said'"),
        (LINES + (0,), "Hi", "frames[2].dialogue[0]", "expected a JSON object, got str 'Hi'"),
        (LINES, "Hi", "frames[2].dialogue", "expected a list of dialogue lines, got str 'Hi'"),
    ],
)
def test_bad_lines_name_the_field_and_value(story_dict, path, value, where, detail):
    _set(story_dict, path, value)
    with pytest.raises(LayoutError) as info:
        Story.from_dict(story_dict)
    assert info.value.path == where
    assert detail in info.value.detail


def test_missing_text(story_dict):
    del story_dict["frames"][2]["dialogue"][0]["text"]
    with pytest.raises(LayoutError, match=r"^frames\[2\]\.dialogue\[0\]\.text: missing required field$"):
        Story.from_dict(story_dict)


def test_direct_construction_validates():
    with pytest.raises(LayoutError, match=r"^dialogue_line\.style: unknown style 'loud'"):
        DialogueLine("x", "hero", "loud")
    with pytest.raises(LayoutError, match=r"^dialogue_line\.text: must not be empty"):
        DialogueLine("")
    with pytest.raises(LayoutError, match=r"^frame\.dialogue\[0\]: expected a DialogueLine, got dict"):
        Frame("p", dialogue=({"text": "x"},))
    with pytest.raises(LayoutError, match=r"^frames\[0\]\.dialogue\[0\]\.speaker: unknown character 'wolf'"):
        Story((Character("hero", "a fox"),), (Frame("p", dialogue=[DialogueLine("grr", "wolf")]),))
    frame = Frame("p", dialogue=[DialogueLine("x")])
    assert frame.dialogue == (DialogueLine("x"),)


def test_layout_carries_each_frames_lines(story_dict):
    story = Story.from_dict(story_dict)
    layout = story.layout()
    assert layout.dialogue == tuple(f.dialogue for f in story.frames)
    data = layout.to_dict()
    assert data["frames"][2]["dialogue"] == story_dict["frames"][2]["dialogue"]
    assert Layout.from_dict(data) == layout and story.apply_layout(layout) == story


def test_layout_frame_with_dialogue_replaces_and_without_keeps(story_dict):
    story = Story.from_dict(story_dict)
    data = story.layout().to_dict()
    for frame in data["frames"]:
        del frame["dialogue"]
    assert story.apply_layout(Layout.from_dict(data)) == story  # no key: the story's lines stay
    data["frames"][0]["dialogue"] = [{"text": "A new line", "speaker": "hero", "style": "thought"}]
    data["frames"][2]["dialogue"] = []
    edited = story.apply_layout(Layout.from_dict(data))
    assert edited.frames[0].dialogue == (DialogueLine("A new line", "hero", "thought"),)
    assert edited.frames[2].dialogue == ()  # an empty list clears the frame's lines
    assert edited.frames[1] == story.frames[1]


def test_version_1_layout_loads_and_dialogue_in_it_is_refused():
    old = {"version": 1, "characters": ["hero"], "frames": [{"subjects": [{"character": "hero"}]}]}
    layout = Layout.from_dict(old)
    assert layout.version == 2 and layout.dialogue == (None,)
    assert layout.to_dict() == {**old, "version": 2}
    old["frames"][0]["dialogue"] = [{"text": "Hi"}]
    with pytest.raises(LayoutError, match=r"^layout\.frames\[0\]\.dialogue: dialogue needs schema version 2 or later "
                                          r"\(this data says version 1\)$"):
        Layout.from_dict(old)


def test_layout_dialogue_errors():
    good = {"version": 2, "characters": ["hero"], "frames": [{"subjects": [], "dialogue": [{"text": "Hi"}]}]}
    assert Layout.from_dict(good).dialogue == ((DialogueLine("Hi"),),)
    cases = [
        ([{"text": "Hi", "style": "whisper"}], r"^layout\.frames\[0\]\.dialogue\[0\]\.style: unknown style 'whisper'"),
        ([{"text": ""}], r"^layout\.frames\[0\]\.dialogue\[0\]\.text: must not be empty"),
        ([{"text": "x" * 11}], r"^layout\.frames\[0\]\.dialogue\[0\]\.text: is 11 characters, over the limit of 10"),
        (None, r"^layout\.frames\[0\]\.dialogue: expected a list of dialogue lines, got NoneType None"),
    ]
    for lines, pattern in cases:
        data = copy.deepcopy(good)
        data["frames"][0]["dialogue"] = lines
        with pytest.raises(LayoutError, match=pattern):
            Layout.from_dict(data, max_caption_chars=10)
    with pytest.raises(LayoutError, match=r"^layout\.dialogue: has 2 entries for 1 frames"):
        Layout(frames=((),), dialogue=((), ()))


def test_apply_layout_checks_speakers(story_dict):
    story = Story.from_dict(story_dict)
    layout = Layout.from_dict({"version": 2, "frames": [{"dialogue": [{"text": "Hi", "speaker": "wolf"}]}]})
    with pytest.raises(LayoutError, match=r"^layout\.frames\[0\]\.dialogue\[0\]\.speaker: unknown character 'wolf' "
                                          r"\(the story has: 'hero', 'villain'\)$"):
        story.apply_layout(layout)
