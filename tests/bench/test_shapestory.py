"""``bench.shapestory``'s VAE ceiling: the ground truth through the demo's VAE and the pipeline's decode path."""

from __future__ import annotations

import numpy as np

from bench.shapestory import vae_round_trip
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import render_story, score_story
from lay2story_core.shapestory.protocol import stories_with_characters


def test_vae_round_trip_keeps_the_truth_readable():
    pipe = load_story_pipeline(EMBEDDED_MODEL)
    story = stories_with_characters(1, 2, 5, "test")[0]
    frames = render_story(story)[0]
    out = vae_round_trip(pipe, frames)
    assert [im.size for im in out] == [im.size for im in frames]
    error = np.mean([np.abs(np.asarray(a, np.float32) - np.asarray(b.convert("RGB"), np.float32)).mean()
                     for a, b in zip(out, frames)])
    assert 0.0 < error < 12.0  # measured 5.9 (of 255): lossy, but close
    score = score_story(out, story)
    assert score.box_success >= 0.9 and score.colour_accuracy == 1.0 and score.prompt_following == 1.0
    assert out[0].tobytes() == vae_round_trip(pipe, frames[:1])[0].tobytes()  # per frame, deterministic


def test_summaries_count_identity_anywhere_and_the_bars_list_the_global_branch_rows():
    from bench.shapestory import ABLATION_COLUMNS, BAR_COLUMNS, BAR_VARIANTS, PLAIN, TRAINING_FREE, _bar, _summaries

    stories = stories_with_characters(2, 3, 9, "test")
    pairs = [(s, render_story(s)[0]) for s in stories]
    summary = _summaries({3: [score_story(frames, s) for s, frames in pairs]}, pairs)
    assert summary["anywhere"] == 1.0 and _bar(summary)["identity_anywhere"] == 1.0
    assert _summaries({3: [score_story(frames, s) for s, frames in pairs]})["anywhere"] is None
    assert BAR_VARIANTS["plain"] is PLAIN and BAR_VARIANTS["training-free"] is TRAINING_FREE
    from bench.shapestory import AUTO_LAYOUT, LAYOUT_OFF, TRAINING_FREE_BOXES

    assert BAR_VARIANTS["layout off (auto layout)"] is AUTO_LAYOUT
    assert BAR_VARIANTS["layout off (w/o lc)"] is LAYOUT_OFF
    assert AUTO_LAYOUT.call_kwargs(stories[0])["auto_layout"] is True
    assert LAYOUT_OFF.call_kwargs(stories[0])["auto_layout"] is False
    assert BAR_VARIANTS["training-free + box control"] is TRAINING_FREE_BOXES
    from bench.shapestory import BOX_CONTROL_STRENGTH

    assert TRAINING_FREE_BOXES.consistency.box_strength == BOX_CONTROL_STRENGTH and 0 < BOX_CONTROL_STRENGTH <= 1
    for columns in (ABLATION_COLUMNS, BAR_COLUMNS):
        assert {"colour_accuracy", "shape_accuracy", "pattern_accuracy", "identity_anywhere"} <= set(columns)
    assert set(_bar(summary)) == set(BAR_COLUMNS) - {"characters", "variant", "box_success_1", "box_success_2"}
