"""``bench.plain_outline``: its start-0 row is the pipeline's own plain sampling, a late start keeps the ground truth,
and a one-story quick run reports every row."""

from __future__ import annotations

import pytest
import torch

from bench import plain_outline
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines.images import to_tensor_image
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import render_story
from lay2story_core.shapestory.protocol import stories_with_characters


@pytest.fixture(scope="module")
def plain():
    return load_story_pipeline(EMBEDDED_MODEL, subject_branch=None)


def _tensor(images) -> torch.Tensor:
    return torch.stack([to_tensor_image(im.convert("RGB"), 64, 64) for im in images])


def test_start_zero_is_the_pipelines_plain_sampling(plain):
    story = stories_with_characters(1, 1, 3100, "test")[0]
    ours = plain_outline.sample_from_truth(plain, story, 0, 4, 2.0, seed=5)
    theirs = plain(story, mode="none", num_inference_steps=4, guidance_scale=2.0, seed=5).images
    assert torch.equal(_tensor(ours), _tensor(theirs))


def test_a_late_start_keeps_the_ground_truth_and_an_early_one_does_not(plain):
    story = stories_with_characters(1, 1, 3100, "test")[0]
    truth = _tensor(render_story(story)[0])
    late = (_tensor(plain_outline.sample_from_truth(plain, story, 15, 16, 2.0, seed=5)) - truth).abs().mean()
    early = (_tensor(plain_outline.sample_from_truth(plain, story, 0, 16, 2.0, seed=5)) - truth).abs().mean()
    assert late < 0.05 < early


def test_bad_start_names_the_option():
    with pytest.raises(ValueError, match=r"^--starts: .* got 1.0"):
        plain_outline.start_step(1.0, 16)


def test_a_one_story_quick_run_reports_every_row(tmp_path):
    payload = plain_outline.main(["--quick", "--stories", "1", "--threads", "1", "--starts", "0.5,0.75",
                                  "--json", str(tmp_path / "outline.json")])
    assert [(r["start"], r["start_step"]) for r in payload["rows"]] == [(0.0, 0), (0.5, 2), (0.75, 3)]
    assert payload["rows"][0]["x_shape"] in (0.0, 1.0)
