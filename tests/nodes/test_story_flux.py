"""The FLUX.1 story patch (``nodes/comfy/arch_flux.py``) on the real ComfyUI: ``check_story_flux.py`` builds a tiny
random FLUX with ComfyUI's own classes and samples it with ``comfy.sample.sample``; each test reads one figure.
Skips without a real ComfyUI (``COMFYUI_DIR`` or ``../shared/comfyui/ComfyUI``)."""

from __future__ import annotations

import pytest

from tests.nodes.conftest import run_real_check  # registered by pytest (tests/conftest.py is `conftest`)

ALL_SITES = ["double_block_0", "single_block_0"]


@pytest.fixture(scope="module")
def figures() -> dict:
    return run_real_check("check_story_flux.py")


@pytest.mark.parametrize("run", ["dev_euler_simple", "dev_dpmpp_2m_beta", "schnell_euler_simple"])
@pytest.mark.parametrize("blocks", ["all", "second_half"])
def test_rate0_is_plain_bit_for_bit(figures, run, blocks):
    assert figures[f"rate0_equal_{run}_{blocks}"] is True
    # the story's attention override did run on every active site of every step (3 steps; 2 sites or the second)
    sampler = "_".join(run.split("_")[:-1])
    assert figures[f"rate0_story_calls_{sampler}_{blocks}"] == (6 if blocks == "all" else 3)


@pytest.mark.parametrize("tag", ["plain", "boxes"])
def test_story_attention_equals_dense_reference(figures, tag):
    assert figures[f"dense_checked_calls_{tag}"] >= 4  # steps 1 and 2, both sites
    assert figures[f"dense_sites_{tag}"] == ALL_SITES
    assert figures[f"dense_rel_max_{tag}"] < 1e-5
    # the image queries do share (far from plain), the text queries keep ComfyUI's plain joint attention exactly
    assert figures[f"image_rows_vs_plain_min_{tag}"] > 1e-2
    assert figures[f"text_rows_equal_plain_{tag}"] is True
    assert figures[f"first_step_equal_plain_{tag}"] is True  # start_step 1: the first step is plain


def test_boxes_restrict_the_shared_tokens(figures):
    # the story with boxes matches the box-masked reference (above) and not the every-image-token one
    assert figures["boxes_vs_unboxed_reference_min"] > 1e-2


def test_frames_share_only_with_a_rate(figures):
    assert figures["frame1_equal_rate1"] is False and figures["frame1_change_rate1"] > 1e-3
    assert figures["frame1_equal_rate0"] is True and figures["frame1_change_rate0"] == 0.0


@pytest.mark.parametrize("when", ["before", "after"])
def test_lora_patched_model_stays_patched(figures, when):
    assert figures["lora_vs_base_rel"] > 1e-2  # the weight patch does change the model
    assert figures[f"lora_{when}_story_sites"] == ALL_SITES
    assert figures[f"lora_{when}_story_wrapper"] is True
    assert figures[f"lora_{when}_rate0_equal_lora"] is True
    if when == "after":
        assert figures["lora_keys_after"] == 1


def test_story_runs_on_the_lora_model(figures):
    assert figures["lora_story_rate1_vs_lora_rel"] > 1e-2


def test_attention_mask_falls_back_to_plain(figures):
    assert figures["mask_fallback_equal_plain"] is True
    assert figures["direct_call_story_vs_plain_rel"] > 1e-2  # the same call without the mask does share


def test_other_block_replacements_are_chained_and_a_new_story_replaces_the_old(figures):
    assert figures["foreign_rate0_equal"] is True
    assert figures["foreign_calls_with_story"] == 3  # one per step, each with the story's attention override
    assert figures["restory_double_is_foreign"] is True
    assert figures["restory_rate0_equal"] is True
    assert figures["restory_wrappers"] == 1


def test_bad_latent_batch_names_latent_image_before_any_model_call(figures):
    assert figures["latent_error"] and figures["latent_error"].startswith("latent_image:")
    assert "3" in figures["latent_error"] and "4 frames" in figures["latent_error"]
    assert figures["latent_error_model_calls"] == 0


def test_blocks_out_of_range_names_blocks(figures):
    assert figures["blocks_error"] and figures["blocks_error"].startswith("blocks:")
    assert "99" in figures["blocks_error"]
    assert figures["blocks_error_input_untouched"] is True


def test_check_is_quick(figures):
    assert figures["seconds"] < 60
