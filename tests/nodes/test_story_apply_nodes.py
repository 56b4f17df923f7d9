"""Apply Story, Story Conditioning and Empty Story Latent: the story under ComfyUI's own samplers.

The real-host figures come from ``check_story_nodes.py`` (one subprocess against the real ComfyUI: tiny SD1.5 UNet
and CLIP / T5 built with ComfyUI's classes, ComfyUI's own KSampler / KSamplerAdvanced); the pure helpers (batching
of encoder outputs, the memory bound, input checks that fail before a model is touched) are tested here directly.
"""

from __future__ import annotations

import pytest
import torch

from lay2story_core.story import Story
from nodes.story_apply import L2S_ApplyStory, identity_bank_factor
from nodes.story_conditioning import (
    MAX_REPEAT,
    L2S_EmptyStoryLatent,
    L2S_StoryConditioning,
    batch_encodings,
    common_length,
    latent_geometry,
)
from tests.nodes.conftest import run_real_check

FRAMES = 4


@pytest.fixture(scope="module")
def real():
    return run_real_check("check_story_nodes.py")


def _one_line(message: str, field: str) -> bool:
    return message.startswith(f"ValueError: {field}: ") and "\n" not in message


# ------------------------------------------------------------------------------------ real ComfyUI: conditioning
def test_conditioning_has_one_row_per_frame(real):
    assert real["positive_shape"][0] == real["negative_shape"][0] == real["pooled_shape"][0] == FRAMES
    assert real["single_lengths"] == [77, 154, 77, 77]  # frame 1's prompt is two CLIP chunks
    assert real["positive_shape"][1] == 154  # repeated to the lcm, as ComfyUI's CONDCrossAttn.concat


def test_each_row_is_its_frame_encoded_alone(real):
    assert all(real["rows_equal_single"])  # bit for bit (the 77-token rows repeated twice)
    assert all(real["pooled_rows_equal_single"])
    assert all(real["negative_rows_equal_single"])
    assert real["rows_differ_between_frames"] > 1e-3  # control: the frames' captions are not one caption


def test_t5_rows_repeat_to_a_common_length(real):
    assert real["t5_repeat_lengths"] == [15, 25, 15, 15]  # ComfyUI's PixArt T5 does not pad
    assert real["t5_repeat_rows_shape"][:2] == [FRAMES, 75]
    assert all(real["t5_repeat_rows_equal"])  # bit for bit: each row its caption repeated (5x, 3x)


def test_t5_rows_beyond_the_limit_are_padded_to_the_longest(real):
    assert real["t5_padded_lengths"] == [15, 27, 15, 15]  # lcm 135 > 4 x 27
    assert real["t5_padded_rows_shape"][:2] == [FRAMES, 27]
    assert all(real["t5_padded_rows_equal"])  # each row: its caption padded to 27 tokens by the tokenizer


# --------------------------------------------------------------------------------------- real ComfyUI: latent
def test_empty_story_latent_shapes(real):
    assert real["latent_default"] == [FRAMES, 4, 16, 16]  # the story's 128 px, no model: 4 channels, /8
    assert real["latent_sd15"] == [FRAMES, 4, 16, 8]  # width 64
    assert real["latent_flux"] == [FRAMES, 16, 12, 16]  # FLUX's latent format: 16 channels; height 96


# ------------------------------------------------------------------------------------ real ComfyUI: sampling
def test_rate_zero_is_the_plain_model_bit_for_bit(real):
    assert real["plain_finite"]
    assert real["rate0_equals_plain"]
    assert real["rate0_equals_plain_advanced"]


def test_the_story_patch_is_active_and_the_input_model_untouched(real):
    assert real["story_finite"]
    assert real["story_vs_plain"] > 1e-5  # next to the exact equalities above
    assert real["input_model_unchanged"] and real["input_model_clean"]


def test_pixart_under_ksampler(real):
    assert real["pixart_latent"] == [FRAMES, 4, 64, 64]
    assert real["pixart_plain_finite"] and real["pixart_story_finite"]
    assert real["pixart_rate0_equals_plain"]  # training-free at rate 0 without a CLIP: PixArtMS.forward itself
    assert real["pixart_story_vs_plain"] > 1e-3  # sharing + regional captions through the T5 CLIP


def test_each_batch_row_is_its_own_frame(real):
    assert max(real["frame_alone_vs_batch_row"]) < 1e-5  # frame i alone (CLIP Text Encode) == batch row i
    assert real["frame_alone_vs_other_row"] > 0.1  # control


def test_memory_estimate_sees_the_identity_bank(real):
    assert real["memory_factor"] == pytest.approx(3.0)  # rate 0.5, 4 identity frames
    assert real["memory_loaded_ratio"] == pytest.approx(3.0)
    assert real["memory_prepare_batches"] == [24, 8]  # first load: scaled batch; once patched: unchanged
    assert real["memory_restored"]
    assert not real["memory_rate0_patched"]
    assert real["memory_factor_reapplied"] == pytest.approx(2.0)  # replaced, not compounded


@pytest.mark.parametrize("case,field", [
    ("model_sd3", "model"), ("model_not_a_model", "model"), ("subject_branch_on_sd15", "subject_branch"),
    ("subject_branch_on_flux", "subject_branch"), ("subject_branch_without_clip", "clip"),
    ("reference_without_vae", "reference"),
    ("reference_without_subject_branch", "reference"), ("blocks_text", "blocks"),
    ("blocks_out_of_range", "blocks"), ("rate", "rate"), ("identity_frames", "identity_frames"),
    ("start_step", "start_step"), ("layout_of_another_story", "layout"), ("story", "story"),
    ("latent_of_another_story", "latent_image"), ("conditioning_clip", "clip"), ("conditioning_layout", "layout"),
    ("latent_width", "width"), ("latent_model", "model"),
])
def test_bad_input_is_one_line_naming_the_input(real, case, field):
    assert _one_line(real["errors"][case], field), real["errors"][case]


def test_nothing_is_patched_by_a_failed_apply(real):
    assert real["input_model_clean_after_errors"]


# --------------------------------------------------------------------------------------------- pure helpers
def test_common_length_mirrors_comfyui_batching():
    assert common_length([77]) == 77
    assert common_length([77, 154, 231]) == 462  # CLIP captions of 1, 2 and 3 chunks
    assert common_length([15, 25]) == 75
    assert common_length([15, 27]) is None  # lcm 135 > 4 x 27
    assert common_length([6, 8]) == 24 <= MAX_REPEAT * 8 and common_length([3, 5, 7]) is None


def test_batch_encodings_repeats_rows_and_keeps_the_rest():
    a, b = torch.randn(1, 2, 3), torch.randn(1, 4, 3)
    rows = [{"cond": a, "pooled_output": torch.ones(1, 5), "attention_mask": torch.ones(1, 2), "hooks": None},
            {"cond": b, "pooled_output": torch.zeros(1, 5), "attention_mask": torch.ones(1, 4), "hooks": None}]
    out = batch_encodings(rows)
    assert torch.equal(out["cond"], torch.cat([a.repeat(1, 2, 1), b]))
    assert torch.equal(out["pooled_output"], torch.cat([torch.ones(1, 5), torch.zeros(1, 5)]))
    assert out["attention_mask"].shape == (2, 4) and out["hooks"] is None


def test_repeated_tokens_are_the_same_cross_attention():
    """Why rows may be repeated to a common length: attention over keys repeated r times is the same attention."""
    q, k, v = torch.randn(1, 2, 6, 8, dtype=torch.float64), torch.randn(1, 2, 3, 8, dtype=torch.float64), \
        torch.randn(1, 2, 3, 8, dtype=torch.float64)
    once = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    thrice = torch.nn.functional.scaled_dot_product_attention(q, k.repeat(1, 1, 3, 1), v.repeat(1, 1, 3, 1))
    assert torch.allclose(once, thrice, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rows,needle", [
    ([{"cond": torch.zeros(1, 15, 3)}, {"cond": torch.zeros(1, 27, 3)}], "cannot be batched"),
    ([{"cond": torch.zeros(1, 2, 3), "pooled_output": None}, {"cond": torch.zeros(1, 2, 3),
                                                              "pooled_output": torch.zeros(1, 5)}], "differs"),
    ([{"cond": torch.zeros(1, 2, 3), "y": torch.zeros(1, 5)}, {"cond": torch.zeros(1, 2, 3),
                                                               "y": torch.zeros(1, 6)}], "do not batch"),
])
def test_batch_encodings_refuses_what_does_not_batch(rows, needle):
    with pytest.raises(ValueError, match=f"^story: .*{needle}"):
        batch_encodings(rows)


def test_identity_bank_factor():
    assert identity_bank_factor(0.0, 4) == 1.0
    assert identity_bank_factor(0.5, 4) == 3.0  # each frame: N + 0.5 * 4 * N keys at most (own sample masked)
    assert identity_bank_factor(1.0, 1) == 2.0  # one identity frame: the others read all of its tokens
    assert latent_geometry(None) == (4, 8)


def _story() -> Story:
    return Story.from_dict({"version": 1, "width": 64, "height": 96,
                            "characters": [{"id": "hero", "identity": "a fox"}],
                            "frames": [{"prompt": f"frame {i}"} for i in range(FRAMES)]})


def test_empty_story_latent_without_a_model():
    samples = L2S_EmptyStoryLatent().generate(_story())[0]["samples"]
    assert samples.shape == (FRAMES, 4, 12, 8) and not samples.any()


@pytest.mark.parametrize("kwargs,field", [
    ({"rate": 1.5}, "rate"), ({"rate": True}, "rate"), ({"blocks": "middle"}, "blocks"), ({"blocks": 3}, "blocks"),
    ({"identity_frames": -1}, "identity_frames"), ({"start_step": 1.5}, "start_step"),
    ({"subject_scale": -1.0}, "subject_scale"), ({"story": None}, "story"), ({"layout": "{}"}, "layout"),
])
def test_apply_story_checks_settings_before_the_model(kwargs, field):
    """These fail before the MODEL is looked at (here: no model at all)."""
    args = {"model": None, "story": _story(), **kwargs}
    with pytest.raises(ValueError, match=f"^{field}: "):
        L2S_ApplyStory().apply(**args)


def test_story_conditioning_refuses_a_non_clip():
    with pytest.raises(ValueError, match="^clip: "):
        L2S_StoryConditioning().encode("clip", _story())
