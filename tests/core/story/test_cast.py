"""Casts (characters added one at a time, with in-memory reference pictures), frame lines with a ``[id, id2]``
prefix, stories built from both, and how a drawn layout combines with the frames a prefix names."""

from __future__ import annotations

import pickle

import pytest

from lay2story_core.story import (
    Cast,
    Character,
    Layout,
    LayoutError,
    Reference,
    Story,
    Subject,
    merge_layout_subjects,
    parse_frame_line,
    story_from_lines,
)

IDS = ("hero", "cat")
HERO = Character("hero", "a red striped star")
CAT = Character("cat", "a blue dotted circle", Reference(box=(0.1, 0.2, 0.6, 0.9)))


def test_cast_keeps_the_chain_order_and_is_immutable():
    first = Cast().add(HERO)
    both = first.add(CAT, image="picture")
    assert first.character_ids == ("hero",) and first.reference_images == ()
    assert both.character_ids == ("hero", "cat") and both.reference_images == (("cat", "picture"),)
    assert Cast().add(CAT, "p").add(HERO).character_ids == ("cat", "hero")


def test_duplicate_ids_name_the_character():
    with pytest.raises(LayoutError, match=r"^character_id: 'hero' is already in the cast \(so far: 'hero', 'cat'\)"):
        Cast().add(HERO).add(CAT).add(Character("hero", "a green square"))
    with pytest.raises(LayoutError, match=r"^cast\.characters\[1\]: duplicate character id 'hero'"):
        Cast((HERO, HERO))


def test_reference_pictures_need_a_reference_without_a_path():
    with pytest.raises(LayoutError, match=r"^reference_images\[0\]: character 'hero' needs a reference"):
        Cast((HERO,), (("hero", "picture"),))
    with pytest.raises(LayoutError, match=r"^reference_images\[0\]: unknown character 'dog'"):
        Cast((HERO,), (("dog", "picture"),))
    with_path = Character("hero", "a star", Reference("hero.png"))
    with pytest.raises(LayoutError, match="needs a reference without an image path"):
        Cast().add(with_path, "picture")


@pytest.mark.parametrize(("line", "expected"), [
    ("on the grass", (None, "on the grass")),
    ("  [hero, cat]  on the grass ", (("hero", "cat"), "on the grass")),
    ("[cat,hero] in a room", (("cat", "hero"), "in a room")),
    ("[ hero ]in the sky", (("hero",), "in the sky")),
    ("on the grass [not a prefix]", (None, "on the grass [not a prefix]")),
])
def test_frame_line_prefix(line, expected):
    assert parse_frame_line(line, IDS) == expected


@pytest.mark.parametrize(("line", "message"), [
    ("[dog] on the grass", r"^line 3: unknown character 'dog' \(known: 'hero', 'cat'\)$"),
    ("[hero, dog] x", r"^line 3: unknown character 'dog'"),
    ("[] on the grass", r"^line 3: empty character list '\[\]'"),
    ("[ ] on the grass", r"^line 3: empty character list"),
    ("[hero, cat on the grass", r"^line 3: '\[' without a closing '\]'"),
    ("[hero [cat]] x", r"^line 3: '\[' inside the character list"),
    ("[hero][cat] x", r"^line 3: a second \[\.\.\.\] after '\[hero\]'"),
    ("[hero,,cat] x", r"^line 3: empty name at position 2"),
    ("[hero, hero] x", r"^line 3: character 'hero' is named twice"),
    ("[hero]   ", r"^line 3: no prompt after '\[hero\]'"),
])
def test_frame_line_errors_name_the_line(line, message):
    with pytest.raises(LayoutError, match=message):
        parse_frame_line(line, IDS, path="line 3")


def test_story_from_lines_lists_who_is_in_each_frame():
    cast = Cast().add(HERO).add(CAT, "picture")
    lines = ["[hero, cat] on the grass", "in the sky", "[cat] in a room"]
    story = story_from_lines(cast.characters, lines, width=64, height=64, reference_images=cast.reference_images)
    assert [f.prompt for f in story.frames] == ["on the grass", "in the sky", "in a room"]
    assert [[s.character for s in f.subjects] for f in story.frames] == [["hero", "cat"], ["hero", "cat"], ["cat"]]
    assert all(s.box is None and s.caption is None for f in story.frames for s in f.subjects)
    assert story.global_caption(2) == "a blue dotted circle, in a room"
    assert dict(story.reference_images) == {"cat": "picture"}
    # without list_everyone a line with no prefix is the schema's "every character" (no subjects)
    plain = story_from_lines(cast.characters, lines, list_everyone=False)
    assert plain.frames[1].subjects == () and plain.reference_images == ()
    assert plain.resolve_frame(1) == story.resolve_frame(1)  # the same frame to the sampler
    with pytest.raises(LayoutError, match=r"^line 2: unknown character 'dog'"):
        story_from_lines(cast.characters, ["ok", "[dog] x"])
    with pytest.raises(LayoutError, match="^lines: no frame"):
        story_from_lines(cast.characters, [])


def test_reference_images_travel_with_the_story_but_not_its_json():
    cast = Cast().add(HERO).add(CAT, "picture")
    story = story_from_lines(cast.characters, ["x", "y"], reference_images=cast.reference_images)
    laid_out = story.apply_layout(Layout(frames=((Subject("cat", (0.0, 0.0, 0.5, 0.5)),),)))
    assert laid_out.reference_images == story.reference_images  # copies keep them
    assert story.with_layout(boxes=False).reference_images == story.reference_images
    again = Story.from_json(story.to_json())
    assert again == story and again.reference_images == ()  # JSON keeps the box only
    assert again.characters[1].reference == Reference(box=(0.1, 0.2, 0.6, 0.9))
    assert pickle.loads(pickle.dumps(story)).reference_images == (("cat", "picture"),)
    assert Story(story.characters, story.frames, reference_images={"cat": 1}).reference_images == (("cat", 1),)


def test_a_layout_keeps_the_characters_a_prefix_names():
    story = story_from_lines((HERO, CAT), ["[hero, cat] on the grass", "[cat] in a room", "in the sky", "at night"])
    hero_box = Subject("hero", (0.0, 0.0, 0.5, 0.5), "the star")
    layout = Layout(frames=((hero_box,), (), (hero_box, Subject("cat", (0.5, 0.5, 1.0, 1.0))), ()))
    merged = story.apply_layout(layout)
    assert merged.frames[0].subjects == (hero_box, Subject("cat"))  # the cat stays, without a box
    assert merged.frames[1].subjects == (Subject("cat"),)  # no boxes drawn: the prefix's characters
    assert merged.frames[2].subjects == layout.frames[2]  # both placed
    assert merged.frames[3].subjects == (Subject("hero"), Subject("cat"))  # everyone
    assert merged.apply_layout(layout) == merged  # applying again changes nothing
    assert story.apply_layout(story.layout()) == story
    # a character the prefix leaves out but the layout places joins the frame
    assert story.apply_layout(Layout(frames=((), (hero_box,)))).frames[1].subjects == (hero_box, Subject("cat"))


def test_merge_replaces_a_story_s_own_layout():
    boxed, named = Subject("hero", (0.1, 0.1, 0.4, 0.4)), Subject("cat")
    captioned = Subject("cat", None, "the cat sleeping")
    assert merge_layout_subjects((boxed, named), ()) == (named,)
    assert merge_layout_subjects((boxed, captioned), ()) == ()  # a caption is the story's own layout: replaced
    assert merge_layout_subjects((), (boxed,)) == (boxed,)
    assert merge_layout_subjects((named,), (Subject("cat", (0.0, 0.0, 1.0, 0.5)),)) == (
        Subject("cat", (0.0, 0.0, 1.0, 0.5)),)
