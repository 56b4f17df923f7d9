"""The shipped ShapeStory demo model works: layout puts characters in their boxes with the identity the text names,
and the story mechanism (the subject branch's 3D attention and the reference) gives what the text leaves out.

The checks run on a few held-out stories (characters never seen in training) at 12 steps with the demo's sampler
(Euler ancestral) and guidance scale (its ``lay2story.json``: CFG 2); the thresholds sit
below what the shipped weights measure on exactly these stories and far above what a model without the mechanism
gets, and three tests show the checks fail when the subject branch is zeroed (``subject_scale=0``), its box
embedding is taken out, or its masked 3D attention is cut (``attention_3d=False``). The full figures are
``python -m bench.shapestory``'s.
"""

from __future__ import annotations

import json

import pytest

from bench.shapestory import references
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines import SCHEDULERS, PipelineManifest, make_scheduler, scheduler_name
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import score_story, summarize
from lay2story_core.shapestory.protocol import attribute_agreement, partial_stories, stories_with_characters

STEPS, SEED = 12, 2000
CFG = PipelineManifest.read(EMBEDDED_MODEL).sampling.guidance_scale
# measured on the shipped weights (stages 1g + 2l; Euler ancestral, the demo folder's scheduler) with exactly these
# stories and seeds: layout on box success 1.00, colour 1.00, shape 1.00 (subject branch zeroed: box success 0.20,
# shape 0.55; without the box embedding: shape 0.15, box 0.40); agreement of unnamed attributes without a reference
# 1.00 (3D attention cut: 0.31)
MIN_BOX_SUCCESS = 0.9
MIN_COLOUR = 0.9
MIN_SHAPE = 0.9  # the bar for training characters
MIN_AGREEMENT = 0.85  # unnamed attributes across frames, without a reference


@pytest.fixture(scope="module")
def demo():
    assert (EMBEDDED_MODEL / "transformer").is_dir(), f"the embedded demo model is missing: {EMBEDDED_MODEL}"
    return load_story_pipeline(EMBEDDED_MODEL)


def layout_scores(pipe, counts=(1, 2), **kwargs) -> dict:
    """Two one-character stories and one two-character story (``counts``: which of them)."""
    stories = [(i, story) for i, story in enumerate(stories_with_characters(2, 1, SEED, "test")
                                                    + stories_with_characters(1, 2, SEED + 50, "test"))
               if len(story.characters) in counts]
    scores = []
    for i, story in stories:
        images = pipe(story, mode="lay2story", references=references(story), num_inference_steps=STEPS,
                      guidance_scale=CFG, seed=SEED + i, **kwargs).images
        scores.append(score_story(images, story))
    return summarize(scores)


def agreement(pipe, **kwargs) -> float:
    """Agreement of the attributes the identity text leaves out, across a story's frames, with no reference: only
    the subject branch's 3D attention connects the frames."""
    values = []
    for i, item in enumerate(partial_stories(2, SEED + 500, "test")):
        images = pipe(item.prompt, mode="lay2story", references=None, num_inference_steps=STEPS,
                      guidance_scale=CFG, seed=SEED + 100 + i, **kwargs).images
        values.append(attribute_agreement(images, item)["agreement"])
    return sum(values) / len(values)


def check_layout(pipe, **kwargs) -> None:
    result = layout_scores(pipe, **kwargs)
    bars = (("box_success", MIN_BOX_SUCCESS), ("colour_accuracy", MIN_COLOUR), ("shape_accuracy", MIN_SHAPE))
    for key, least in bars:
        assert result[key] >= least, f"{key} {result[key]:.2f} < {least}: {result}"


def check_consistency(pipe, **kwargs) -> None:
    value = agreement(pipe, **kwargs)
    assert value >= MIN_AGREEMENT, value


def test_demo_model_puts_characters_in_their_boxes_with_their_identity(demo):
    check_layout(demo)


def test_layout_check_fails_when_the_subject_branch_is_zeroed(demo):
    with pytest.raises(AssertionError):
        check_layout(demo, subject_scale=0.0)


def test_layout_check_fails_without_the_box_embedding(demo):
    branch = demo.subject_branch
    embedding, branch.box_embed = branch.box_embed, None  # tokens know only their absolute position
    try:
        result = layout_scores(demo)
        assert result["shape_accuracy"] < MIN_SHAPE, result  # shapes need it (measured 0.05); so does the box: 0.50
        with pytest.raises(AssertionError):
            check_layout(demo)
    finally:
        branch.box_embed = embedding


def test_demo_model_gives_unnamed_attributes_consistently(demo):
    check_consistency(demo)


def test_consistency_check_fails_when_3d_attention_is_cut(demo):
    with pytest.raises(AssertionError):
        check_consistency(demo, attention_3d=False)


# -- layout off (issue 24): the model places each character itself (auto layout, the demo folder's default) -------
# measured on the shipped weights with exactly these stories and seeds (scored without boxes): colour 1.00, shape
# 1.00, pattern 0.80, the two-character story's identity anywhere 0.60; without auto layout (the paper's w/o lc: the
# branch gets the full-frame boxes of its layout dropout) 1.00 / 0.40 / 0.70 / 0.20; subject branch zeroed 0.85 / 0.55
# / 0.50 / 0.00 (stages 1g + 2k: 1.00 / 1.00 / 0.85 / 0.70; stages 1c + 2g: 1.00 / 0.95 / 0.90 / 0.70, without auto
# layout 0.90 / 0.40 / 0.60 / 0.20). The pattern floor sits one subject (of 20) below the measure: the negatives fail
# on shape and identity anywhere, and the bench's 8 stories per count read auto layout's pattern 0.97 | 0.95.
MIN_OFF_SHAPE = 0.8
MIN_OFF_PATTERN = 0.75
MIN_OFF_ANYWHERE = 0.5  # the two-character story: each character somewhere with its own colour, shape and pattern


def layout_off_scores(pipe, **kwargs) -> dict:
    """``layout_scores`` with layout off, scored without boxes (none was asked for), plus identity anywhere."""
    from lay2story_core.shapestory.metrics import identity_anywhere

    stories = stories_with_characters(2, 1, SEED, "test") + stories_with_characters(1, 2, SEED + 50, "test")
    scores, found = [], []
    for i, story in enumerate(stories):
        images = pipe(story, mode="lay2story", layout=False, subject_captions=False, references=references(story),
                      num_inference_steps=STEPS, guidance_scale=CFG, seed=SEED + i, **kwargs).images
        scores.append(score_story(images, story.with_layout(boxes=False)))
        if len(story.characters) > 1:
            found += identity_anywhere(images, story)
    return {**summarize(scores), "identity_anywhere": sum(found) / max(len(found), 1)}


def check_layout_off(pipe, **kwargs) -> None:
    result = layout_off_scores(pipe, **kwargs)
    bars = (("colour_accuracy", MIN_COLOUR), ("shape_accuracy", MIN_OFF_SHAPE),
            ("pattern_accuracy", MIN_OFF_PATTERN), ("identity_anywhere", MIN_OFF_ANYWHERE))
    for key, least in bars:
        assert result[key] >= least, f"{key} {result[key]:.2f} < {least}: {result}"


def test_layout_off_draws_each_character_with_its_identity(demo):
    check_layout_off(demo)


def test_layout_off_check_fails_without_auto_layout(demo):
    """Without placing, the subject branch gets full-frame boxes (its layout dropout) and the outline is left to
    the global branch: the paper's w/o lc, which on the demo draws lumps."""
    with pytest.raises(AssertionError):
        check_layout_off(demo, auto_layout=False)


def test_layout_off_check_fails_when_the_subject_branch_is_zeroed(demo):
    with pytest.raises(AssertionError):
        check_layout_off(demo, subject_scale=0.0)


# -- training-free layout: box control on the global branch alone (no subject branch) ----------------------------
# measured on the shipped weights, these stories and seeds: box success 1.00 at box_strength 1, 0.10 at 0 (off)
MIN_TF_BOX_SUCCESS = 0.6


def training_free_box_success(pipe, strength: float) -> float:
    from lay2story_core.consistency import ConsistencyConfig

    stories = stories_with_characters(2, 1, SEED, "test") + stories_with_characters(1, 2, SEED + 50, "test")
    scores = []
    for i, story in enumerate(stories):
        images = pipe(story, mode="training_free", num_inference_steps=STEPS, guidance_scale=CFG, seed=SEED + i,
                      consistency=ConsistencyConfig(rate=1.0, blocks="all", box_strength=strength)).images
        scores.append(score_story(images, story))
    return summarize(scores)["box_success"]


@pytest.fixture(scope="module")
def global_branch():
    return load_story_pipeline(EMBEDDED_MODEL, subject_branch=None)


def test_training_free_box_control_puts_characters_in_their_boxes(global_branch):
    assert training_free_box_success(global_branch, 1.0) >= MIN_TF_BOX_SUCCESS


def test_training_free_box_check_fails_without_box_control(global_branch):
    assert training_free_box_success(global_branch, 0.0) < MIN_TF_BOX_SUCCESS


# -- training-free regional captions: a box reads its character's identity and the frame prompt -------------------
# measured on the shipped weights, these stories and seeds (two and three characters): scene 1.00 with region
# captions, 0.90 when each box reads its subject caption instead (the rule before; 0.86 on stages 1c + 2g, 0.71 on
# stage 2f's weights)
MIN_TF_SCENE = 0.95  # issue 24's scene bar


def training_free_scene(pipe) -> float:
    from lay2story_core.consistency import ConsistencyConfig

    stories = stories_with_characters(2, 2, SEED + 60, "test") + stories_with_characters(2, 3, SEED + 70, "test")
    scores = []
    for i, story in enumerate(stories):
        images = pipe(story, mode="training_free", num_inference_steps=STEPS, guidance_scale=CFG, seed=SEED + i,
                      consistency=ConsistencyConfig(rate=1.0, blocks="all")).images
        scores.append(score_story(images, story))
    return summarize(scores)["prompt_following"]


def test_training_free_region_captions_keep_the_scene(global_branch):
    assert training_free_scene(global_branch) >= MIN_TF_SCENE


def test_training_free_scene_check_fails_with_subject_captions_in_the_boxes(global_branch, monkeypatch):
    from lay2story_core.consistency import box_control

    def subject_caption(story, frame, character):
        return next(s.caption for s in story.frames[frame].subjects if s.character == character)

    monkeypatch.setattr(box_control, "region_caption", subject_caption)
    assert training_free_scene(global_branch) < MIN_TF_SCENE


# the demo folder's own sampler (Euler ancestral) is what every test above samples with; this covers the others
DEMO_SAMPLER = scheduler_name(json.loads((EMBEDDED_MODEL / "scheduler" / "scheduler_config.json").read_text()))


@pytest.mark.parametrize("name", [name for name in SCHEDULERS if name != DEMO_SAMPLER])
def test_every_offered_sampler_draws_the_demo(demo, name):
    """Each other sampler of the CLI and the sampler node, built from the demo's scheduler config, puts the two
    characters of a story in their boxes with their identity (DDIM and DDPM clipped x_0 to [-1, 1] before: box
    success 0.00)."""
    original = demo.scheduler
    demo.scheduler = make_scheduler(name, original.config)
    try:
        scores = layout_scores(demo, counts=(2,))
    finally:
        demo.scheduler = original
    assert scores["box_success"] >= MIN_BOX_SUCCESS and scores["colour_accuracy"] >= MIN_COLOUR, scores
    assert scores["prompt_following"] >= 0.9 and scores["shape_accuracy"] >= MIN_SHAPE, scores
