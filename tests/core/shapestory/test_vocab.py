"""ShapeStory vocabulary: captions read back exactly, bad names are named, colours stay apart from backgrounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lay2story_core.shapestory.vocab import (
    COLOURS,
    CharacterSpec,
    SceneSpec,
    all_character_specs,
    all_scene_specs,
    identity_text,
    parse_identity,
    parse_scene,
    position_words,
    scene_prompt,
    size_word,
    subject_caption,
)
from lay2story_core.story import LayoutError


def test_every_identity_and_subject_caption_parses_back():
    specs = all_character_specs()
    assert len(specs) == len(set(specs)) >= 250  # enough combinations that identity matters
    texts = {identity_text(s) for s in specs}
    assert len(texts) == len(specs)
    for spec in specs:
        assert parse_identity(identity_text(spec)) == spec
        caption = subject_caption(spec, (0.1, 0.6, 0.4, 0.9))
        assert parse_identity(caption) == spec
        assert caption.endswith("small, at the bottom left")


def test_articles_and_solid_pattern_wording():
    assert identity_text(CharacterSpec("star", "red", "stripes")) == "a red striped star"
    assert identity_text(CharacterSpec("circle", "orange", "solid")) == "an orange circle"
    assert parse_identity("An ORANGE circle waves") == CharacterSpec("circle", "orange", "solid")


def test_every_scene_prompt_parses_back():
    scenes = all_scene_specs()
    assert len({(s.upper, s.lower) for s in scenes}) == len(scenes)  # each scene has its own colours
    for scene in scenes:
        assert parse_scene(scene_prompt(scene)) == scene
    assert scene_prompt(SceneSpec("grass", "night")) == "on the grass at night"
    assert scene_prompt(SceneSpec("sky", "day")) == "in the sky"


def test_position_and_size_words():
    assert position_words(0.1, 0.1) == "at the top left"
    assert position_words(0.5, 0.5) == "in the middle"
    assert position_words(0.9, 0.5) == "on the right"
    assert position_words(0.5, 0.9) == "at the bottom"
    assert [size_word(s) for s in (0.25, 0.4, 0.6)] == ["small", "medium", "large"]


@pytest.mark.parametrize(
    ("call", "field", "value"),
    [
        (lambda: CharacterSpec("blob", "red", "solid"), "character.shape", "blob"),
        (lambda: CharacterSpec("star", "mauve", "solid"), "character.colour", "mauve"),
        (lambda: CharacterSpec("star", "red", "plaid"), "character.pattern", "plaid"),
        (lambda: SceneSpec("moon", "day"), "scene.place", "moon"),
        (lambda: SceneSpec("sky", "noon"), "scene.time", "noon"),
        (lambda: parse_identity("a fluffy dog"), "identity", "a fluffy dog"),
        (lambda: parse_scene("somewhere nice"), "prompt", "somewhere nice"),
        (lambda: parse_scene("in the sky on the grass"), "prompt", "in the sky on the grass"),
    ],
)
def test_bad_input_names_field_and_value(call, field, value):
    with pytest.raises(LayoutError) as info:
        call()
    assert info.value.path == field
    assert repr(value) in str(info.value)


def test_character_colours_stay_apart_from_backgrounds_and_each_other():
    backgrounds = {c for s in all_scene_specs() for c in (s.upper, s.lower)}
    for colour in COLOURS:
        nearest = min(np.linalg.norm(np.subtract(colour.primary, b)) for b in backgrounds)
        assert nearest > 80, (colour.name, nearest)
        nearest = min(np.linalg.norm(np.subtract(colour.secondary, b)) for b in backgrounds)
        assert nearest > 45, (colour.name, nearest)
    for a, b in itertools.combinations(COLOURS, 2):
        assert np.linalg.norm(np.subtract(a.primary, b.primary)) > 80, (a.name, b.name)


def test_caption_words_are_every_word_of_every_caption_and_the_demo_tokenizers_pieces():
    from lay2story_core.shapestory.assets import load_tokenizer
    from lay2story_core.shapestory.vocab import caption_words
    from lay2story_core.text import caption_words as words_of

    vocabulary = caption_words()
    assert vocabulary == tuple(sorted(set(vocabulary))) and {"a", "an", "the", "character", "night"} <= set(vocabulary)
    spec = all_character_specs()[5]
    for text in (identity_text(spec, "none"), subject_caption(spec, (0.7, 0.0, 1.0, 0.3)), scene_prompt(
            all_scene_specs()[-1])):
        assert set(words_of(text)) <= set(vocabulary)
    tokenizer = load_tokenizer()
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert set(vocabulary) == {p[1:] for p in pieces if p.startswith("\u2581") and len(p) > 1}
