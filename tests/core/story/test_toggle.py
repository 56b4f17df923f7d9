import pytest

from lay2story_core.story import FULL_FRAME, Layout, LayoutError, Story, Subject


@pytest.fixture
def story(story_dict):
    return Story.from_dict(story_dict)


def test_global_caption_is_identities_in_story_order_then_prompt(story):
    assert story.global_caption(0) == "a red fox in a blue scarf, reading under a tree"
    # frame 1 lists villain before hero; the caption keeps story order
    assert story.global_caption(1) == "a red fox in a blue scarf, a grey wolf in a top hat, a chase through the woods"
    # no subjects: every character
    assert story.global_caption(2) == "a red fox in a blue scarf, a grey wolf in a top hat, dinner together"


def test_resolve_frame_with_full_layout(story):
    (hero,) = story.resolve_frame(0)
    assert (hero.character, hero.character_index) == ("hero", 0)
    assert hero.box == (0.1, 0.2, 0.5, 0.9) and hero.has_box
    assert hero.caption == "the fox sitting, holding a book" and hero.has_caption


def test_resolve_frame_fills_missing_box_and_caption(story):
    villain, hero = story.resolve_frame(1)
    assert (villain.character, villain.character_index, hero.character_index) == ("villain", 1, 0)
    assert villain.box == (0.6, 0.1, 0.95, 0.8) and villain.has_box
    assert villain.caption == story.global_caption(1) and not villain.has_caption
    assert hero.box == FULL_FRAME and not hero.has_box
    assert hero.caption == "the fox running" and hero.has_caption


def test_frame_without_subjects_means_every_character_full_frame(story):
    resolved = story.resolve_frame(2)
    assert [r.character for r in resolved] == ["hero", "villain"]
    assert [r.character_index for r in resolved] == [0, 1]
    for r in resolved:
        assert r.box == FULL_FRAME and r.caption == story.global_caption(2)
        assert not r.has_box and not r.has_caption


@pytest.mark.parametrize("boxes, captions", [(False, True), (True, False), (False, False)])
def test_global_switches_turn_layout_off_everywhere(story, boxes, captions):
    for i in range(story.num_frames):
        resolved = story.resolve_frame(i, boxes=boxes, captions=captions)
        on = story.resolve_frame(i)
        assert [r.character for r in resolved] == [r.character for r in on]
        for r, r_on in zip(resolved, on):
            if not boxes:
                assert r.box == FULL_FRAME and not r.has_box
            else:
                assert (r.box, r.has_box) == (r_on.box, r_on.has_box)
            if not captions:
                assert r.caption == story.global_caption(i) and not r.has_caption
            else:
                assert (r.caption, r.has_caption) == (r_on.caption, r_on.has_caption)
        # with_layout(...) drops the same things for good, and resolves the same way
        assert story.with_layout(boxes=boxes, captions=captions).resolve_frame(i) == resolved


def test_with_layout_copies(story):
    assert story.with_layout() is story
    no_boxes = story.with_layout(boxes=False)
    assert all(s.box is None for f in no_boxes.frames for s in f.subjects)
    assert [s.caption for s in no_boxes.frames[0].subjects] == ["the fox sitting, holding a book"]
    no_captions = story.with_layout(captions=False)
    assert all(s.caption is None for f in no_captions.frames for s in f.subjects)
    assert no_captions.frames[0].subjects[0].box == (0.1, 0.2, 0.5, 0.9)
    assert story.frames[0].subjects[0].box is not None  # the original is untouched


def test_frame_index_errors(story):
    with pytest.raises(LayoutError, match=r"^frame_index: 3 is out of range for a story of 3 frames"):
        story.resolve_frame(3)
    with pytest.raises(LayoutError, match=r"^frame_index: must be >= 0, got -1"):
        story.global_caption(-1)
    with pytest.raises(LayoutError, match=r"^frame_index: expected an integer, got bool"):
        story.resolve_frame(True)


def test_character_lookup(story):
    assert story.character("villain").identity == "a grey wolf in a top hat"
    assert story.character_ids == ("hero", "villain")
    with pytest.raises(LayoutError, match=r"^character_id: unknown character 'wolf' \(known: 'hero', 'villain'\)"):
        story.character("wolf")


def test_layout_round_trip_and_apply(story):
    layout = story.layout()
    assert layout.characters == ("hero", "villain")
    assert layout.frames == tuple(f.subjects for f in story.frames)
    assert story.apply_layout(layout) == story
    assert Layout.from_json(layout.to_json()) == layout
    data = layout.to_dict()
    assert data["version"] == 2 and data["frames"][1] == {"subjects": data["frames"][1]["subjects"], "dialogue": []}


def test_apply_shorter_layout_keeps_later_frames(story):
    new = Layout(frames=((Subject("villain", (0.0, 0.0, 0.5, 0.5), "the wolf lurking"),),))
    applied = story.apply_layout(new)
    assert applied.frames[0].subjects == new.frames[0]
    assert applied.frames[0].prompt == story.frames[0].prompt and applied.frames[0].image == story.frames[0].image
    assert applied.frames[1:] == story.frames[1:]
    assert applied.global_caption(0) == "a grey wolf in a top hat, reading under a tree"
    assert story.apply_layout(Layout.empty(3)).frames[0].subjects == ()


def test_apply_layout_errors(story):
    with pytest.raises(LayoutError, match=r"^layout\.frames: has 4 frames, the story only 3"):
        story.apply_layout(Layout.empty(4))
    bad = Layout(frames=((), (Subject("hero"), Subject("owl"))))
    with pytest.raises(LayoutError) as info:
        story.apply_layout(bad)
    assert info.value.path == "layout.frames[1].subjects[1].character" and info.value.value == "owl"
    assert "unknown character 'owl'" in str(info.value)
    with pytest.raises(LayoutError, match="^layout: expected a Layout, got dict"):
        story.apply_layout({"frames": []})


def test_layout_empty():
    layout = Layout.empty(2, ["a", "b"])
    assert layout.frames == ((), ()) and layout.characters == ("a", "b")
    assert Layout.from_dict(layout.to_dict()) == layout
    assert Layout.empty(0).num_frames == 0
    with pytest.raises(LayoutError, match="^num_frames: must be >= 0, got -1"):
        Layout.empty(-1)


def test_layout_subject_order_and_character_list_are_free():
    # ids in frames need not be in the picker list; that is checked on apply
    layout = Layout.from_dict({"version": 1, "frames": [{"subjects": [{"character": "x", "box": [0, 0, 1, 1]}]}]})
    assert layout.characters == () and layout.frames[0][0].box == FULL_FRAME
