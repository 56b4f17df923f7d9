"""``bench.scorer_robustness``: its first row is the bench's ceiling, perturbations are exact at zero, strong noise
is seen."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench import scorer_robustness
from bench.shapestory import vae_round_trip
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import render_story
from lay2story_core.shapestory.metrics import identity_anywhere
from lay2story_core.shapestory.protocol import stories_with_characters


def _image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_perturbations_at_zero_change_nothing_and_a_bad_kind_is_named():
    image, rng = _image(), np.random.default_rng(1)
    for kind, amount in (("none", 0.0), ("noise", 0.0), ("brightness", 1.0)):
        assert np.array_equal(np.asarray(scorer_robustness.perturb(image, kind, amount, rng)), np.asarray(image))
    noisy = np.asarray(scorer_robustness.perturb(image, "noise", 8.0, np.random.default_rng(1)), dtype=np.float32)
    assert 4.0 < np.abs(noisy - np.asarray(image, dtype=np.float32)).mean() < 8.0  # clipped at 0 and 255
    with pytest.raises(ValueError, match=r"^perturbation: .* got 'sharpen'"):
        scorer_robustness.perturb(image, "sharpen", 1.0, rng)


def test_the_first_row_is_the_ceiling_and_strong_noise_is_seen(tmp_path):
    payload = scorer_robustness.main(["--quick", "--threads", "1", "--noise", "60", "--blur", "0", "--brightness",
                                      "0", "--json", str(tmp_path / "scorer.json")])
    rows = payload["rows"]
    assert [(r["split"], r["perturbation"]) for r in rows] == [("train", "none (ceiling)"), ("train", "noise 60"),
                                                               ("held-out", "none (ceiling)"),
                                                               ("held-out", "noise 60")]
    pipe = load_story_pipeline(str(EMBEDDED_MODEL), subject_branch=None)
    hits = [h for n in scorer_robustness.COUNTS for s in stories_with_characters(1, n, 1000 + 100 * n, "train")
            for h in identity_anywhere(vae_round_trip(pipe, render_story(s)[0]), s)]
    assert rows[0]["identity_anywhere"] == pytest.approx(np.mean(hits)) and rows[0]["x_anywhere"] == 1.0
    for ceiling, noisy in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert ceiling["identity_anywhere"] >= 0.75  # the ground truth through the VAE reads right
        assert noisy["identity_anywhere"] < ceiling["identity_anywhere"]  # noise of 60 / 255 breaks the reading
