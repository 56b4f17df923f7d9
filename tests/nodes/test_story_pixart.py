"""The PixArt story adapter on the real ComfyUI: ``check_story_pixart.py`` runs once in its own process (a tiny
random-weight ``PixArtMS`` from ComfyUI's own classes, ComfyUI's CLIP / VAE, ``comfy.sample.sample``) and each test
reads one of its figures. Skipped without a real ComfyUI (``COMFYUI_DIR`` or ``../shared/comfyui/ComfyUI``)."""

from __future__ import annotations

import pytest

from tests.nodes.conftest import run_real_check  # registered by pytest (tests/conftest.py is `conftest`)

SAMPLERS = ("euler_normal", "dpmpp_2m_karras")
CFG_CALLS = ("joint", "split")  # cond and uncond chunks in one call / in separate calls (unequal caption lengths)
MODES = ("none", "training_free", "lay2story")
CALL_REL = 1e-5  # same inputs, same model code (ComfyPixArt): 0 measured; ComfyUI's forward vs ComfyPixArt ~2e-7


@pytest.fixture(scope="module")
def figures() -> dict:
    return run_real_check("check_story_pixart.py")


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("cfg_calls", CFG_CALLS)
def test_rate0_samples_the_plain_model_bit_for_bit(figures, sampler, cfg_calls):
    assert figures[f"rate0_bit_exact_{sampler}_{cfg_calls}"] is True


def test_cfg_chunks_were_batched_together_and_apart(figures):
    assert figures["layouts_joint"] == [[1, 0]]  # ComfyUI batches the unconditional chunk first
    assert figures["layouts_split"] == [[0], [1]]


@pytest.mark.parametrize("mode", ["training_free", "lay2story"])
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("cfg_calls", CFG_CALLS)
def test_story_runs_complete_under_comfyui_samplers_and_change_the_frames(figures, mode, sampler, cfg_calls):
    assert figures[f"{mode}_finite_{sampler}_{cfg_calls}"] is True
    assert figures[f"{mode}_vs_plain_{sampler}_{cfg_calls}"] > 1e-3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("step", [0, 1])
@pytest.mark.parametrize("order", ["01", "10", "cond_only"])
def test_patched_model_call_equals_the_story_sampler_call(figures, mode, step, order):
    """The same x, t and captions through the object-patched ``diffusion_model`` (ComfyUI's row orders, the
    conditional chunk alone) and through ``L2S_StorySampler``'s ``ComfyStoryPipeline`` + ``ComfyPixArt``."""
    assert figures[f"pipeline_captions_unpadded_{mode}"] is True  # no caption mask in ComfyUI's PixArt
    assert figures[f"call_{mode}_step{step}_{order}"] < CALL_REL


@pytest.mark.parametrize("mode", ["none", "lay2story"])
@pytest.mark.parametrize("step", [0, 1])
def test_an_unconditional_call_alone_equals_the_story_sampler_rows(figures, mode, step):
    """No subject branch on unconditional rows. (Training-free: a call of the unconditional chunk alone draws its
    shared tokens as a first chunk, so its samples differ from the joint call's; measured, not compared.)"""
    assert figures[f"call_{mode}_step{step}_uncond_only"] < CALL_REL


@pytest.mark.parametrize("mode", ["training_free", "lay2story"])
def test_micro_conditioned_pixart_call_equals_the_story_sampler_call(figures, mode):
    assert figures[f"call_ms_{mode}_step1_10"] < CALL_REL


def test_mode_none_is_comfyui_forward_bit_for_bit(figures):
    assert figures["mode_none_bit_exact_plain"] is True


def test_comfypixart_loop_differs_from_comfyui_forward_only_by_the_attention_kernel(figures):
    """Why rate 0 calls ``PixArtMS.forward`` itself: the block loop uses SDPA, ComfyUI's CPU attention differs."""
    assert figures["loop_vs_forward_max_abs"] < 1e-5
    if figures["optimized_attention"] != "attention_pytorch":
        assert figures["loop_vs_forward_bit_exact"] is False


def test_lora_weight_patch_applies_under_the_object_patch(figures):
    assert figures["lora_story_vs_comfypixart"] < 1e-6
    assert figures["lora_changes_output"] > 1e-3


def test_patched_through_object_patch_and_branch_loaded_by_comfyui(figures):
    assert figures["object_patched"] is True
    assert figures["branch_is_additional_model"] is True
    assert figures["input_model_untouched"] is True


@pytest.mark.parametrize("key, prefix", [
    ("error_latent_batch", "latent_image: a batch of 3 latents for a story of 4 frames"),
    ("error_call_rows", "latent_image:"),
    ("error_foreign_patch", "model:"),
    ("error_branch", "subject_branch"),
    ("error_captions", "clip:"),
    ("error_box_strength", "box_strength:"),
])
def test_bad_inputs_name_the_node_input(figures, key, prefix):
    assert figures[key].startswith(prefix), figures[key]


def test_story_sampler_accepts_a_story_patched_model(figures):
    """``L2S_StorySampler`` on the MODEL that Apply Story returned samples as on the plain MODEL."""
    assert figures["story_sampler_on_patched_model_max_rel"] == 0.0
