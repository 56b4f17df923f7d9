"""The SD1.5 / SDXL story adapter on the real ComfyUI: ``check_story_unet.py`` runs once in its own process
(tiny random-weight UNets from ComfyUI's own ``SD15`` / ``SDXL`` classes, ``comfy.sample.sample``) and each test
reads one of its figures. Skipped without a real ComfyUI (``COMFYUI_DIR`` or ``../shared/comfyui/ComfyUI``)."""

from __future__ import annotations

import pytest

from tests.nodes.conftest import run_real_check  # registered by pytest (tests/conftest.py is `conftest`)

ARCHS = ("sd15", "sdxl")
SAMPLERS = ("euler", "dpmpp_2m_sde")
DENSE_REL = 1e-5  # fp32, one softmax over the same keys: ~3e-7 measured
SHARED_REL = 1e-3  # rate 1: frame 0's change reaches the other frames by ~3-5 % of their prediction (measured)


@pytest.fixture(scope="module")
def figures() -> dict:
    return run_real_check("check_story_unet.py")


def test_sites_follow_comfyui_keys_and_sdxl_has_several_transformer_layers_per_block(figures):
    assert [tuple(s) for s in figures["sd15_self_sites"]] == [
        ("input", 1, 0), ("input", 3, 0), ("middle", 0, 0), ("output", 0, 0), ("output", 1, 0), ("output", 2, 0),
        ("output", 3, 0)]
    sdxl = [tuple(s) for s in figures["sdxl_self_sites"]]
    assert ("input", 3, 1) in sdxl and ("middle", 0, 1) in sdxl and ("output", 1, 1) in sdxl and len(sdxl) == 8


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("variant", ["second_half_no_captions", "all_regional_off"])
def test_rate0_samples_the_plain_model_bit_for_bit(figures, arch, sampler, variant):
    assert figures[f"{arch}_rate0_{variant}_{sampler}_equal"] is True


@pytest.mark.parametrize("arch", ARCHS)
def test_second_half_patches_the_decoder_and_all_patches_every_site(figures, arch):
    sites = len(figures[f"{arch}_self_sites"])
    decoder = sum(1 for s in figures[f"{arch}_self_sites"] if s[0] == "output")
    assert figures[f"{arch}_rate0_second_half_no_captions_patched_sites"] == decoder == 4
    assert figures[f"{arch}_rate0_all_regional_off_patched_sites"] == sites
    assert figures[f"{arch}_plain_model_unpatched"] is True


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("boxes", ["no_boxes", "boxes"])
def test_patched_self_attention_equals_the_dense_reference(figures, arch, boxes):
    tag = f"{arch}_{boxes}"
    assert figures[f"{tag}_dense_compared"] == figures[f"{tag}_dense_sites"]  # every site, mid-sampling
    assert figures[f"{tag}_dense_max_rel"] < DENSE_REL
    restricted = figures[f"{tag}_box_restricted"]
    assert restricted == (figures[f"{tag}_dense_sites"] if boxes == "boxes" else 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_tokens_are_shared_at_rate_1_and_not_at_rate_0(figures, arch):
    assert figures[f"{arch}_rate1_frame1_changed_rel"] > SHARED_REL  # identity frame 1 reads identity frame 0
    assert figures[f"{arch}_rate1_frame2_changed_rel"] > SHARED_REL  # a non-identity frame reads them
    assert figures[f"{arch}_rate0_frames123_equal"] is True
    assert figures[f"{arch}_rate0_frame2_changed_rel"] == 0.0
    assert figures[f"{arch}_rate0_frame0_changed_rel"] > 0.1  # the change itself is real


@pytest.mark.parametrize("arch", ARCHS)
def test_regional_captions_change_only_the_box_tokens(figures, arch):
    assert figures[f"{arch}_regional_sites"] == len(figures[f"{arch}_self_sites"])
    assert figures[f"{arch}_regional_outside_equal"] is True
    assert figures[f"{arch}_regional_inside_differs_min"] == 1.0
    assert figures[f"{arch}_regional_boxes_measured"] == 4
    assert figures[f"{arch}_regional_vs_reference_max_rel"] < DENSE_REL


def test_lora_and_story_patches_stay_on_the_model_in_either_order(figures):
    assert figures["sd15_lora_changes_output"] is True
    assert figures["sd15_lora_then_story_equal"] is True
    assert figures["sd15_story_then_lora_equal"] is True
    assert figures["sd15_story_then_lora_patches_kept"] == 4
    assert figures["sd15_lora_then_story_weight_patches_kept"] is True
    assert figures["sd15_lora_reaches_story_rel"] > SHARED_REL
    # another pack's replace patch on a story site keeps running (rate 0: plain, 2 steps x one CFG batch)
    assert figures["sd15_other_pack_equal"] is True and figures["sd15_other_pack_calls"] == 2


def test_bad_inputs_name_the_node_input_before_any_model_call(figures):
    assert "latent_image" in figures["bad_latent_error"] and "3" in figures["bad_latent_error"]
    assert figures["bad_latent_model_calls"] == 0
    assert "blocks" in figures["bad_blocks_error"] and "99" in figures["bad_blocks_error"]
    assert figures["bad_blocks_plain_model_unpatched"] is True
