"""``L2S_ApplyStory``: a ``MODEL`` clone carrying a story, so ComfyUI's own KSampler / KSamplerAdvanced /
SamplerCustomAdvanced (any sampler, any scheduler) sample every frame of the story as one batch.

The node only checks its inputs and builds the story patch (:class:`~.comfy.story_patch.StoryPatch`: the frames,
identity frames, boxes and consistency settings, the boxes' region captions encoded with the ``CLIP``, PixArt's subject
branch inputs); :func:`~.comfy.story_patch.apply_story` picks the adapter of the model's architecture (SD1.5 / SDXL,
FLUX, PixArt), which patches the clone through ComfyUI's documented extension points. Every bad input raises one
line naming the input before anything is patched. The clone also tells ComfyUI's memory estimate what the identity
bank costs (:func:`identity_bank_factor`), so model management frees or offloads enough before sampling.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math

from lay2story_core.consistency import SECOND_HALF, ConsistencyConfig, StoryBatch
from lay2story_core.story import Layout

from .bundles import check_subject_branch
from .layout_editor import apply_layout_to_story
from .reference import check_references
from .story_nodes import check_story

logger = logging.getLogger(__name__)

__all__ = ["L2S_ApplyStory", "MAX_START_STEP", "account_for_identity_bank", "encode_captions",
           "identity_bank_factor"]

MAX_IDENTITY_FRAMES = 256
MAX_START_STEP = 1000
MAX_SUBJECT_SCALE = 4.0
MEMORY_KEY = "lay2story_memory"  # the key of this node's PREPARE_SAMPLING wrapper on a ModelPatcher


def _int_in(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{field}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def _float_in(value: object, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{field}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def check_clip(value: object, field: str = "clip"):
    """A ComfyUI ``CLIP`` (``comfy.sd.CLIP``: ``tokenize`` + ``encode_from_tokens``), else ``ValueError``."""
    if not (hasattr(value, "tokenize") and hasattr(value, "encode_from_tokens")):
        raise ValueError(f"{field}: expected a CLIP (Load Checkpoint's or Load CLIP's), got {type(value).__name__}")
    return value


def check_vae(value: object, field: str = "vae"):
    if not (hasattr(value, "encode") and hasattr(value, "decode")):
        raise ValueError(f"{field}: expected a VAE (Load VAE or a checkpoint's), got {type(value).__name__}")
    return value


def encode_captions(clip, texts: list[str]) -> dict:
    """``{caption: (1, L, C) cross-attention context}`` of each text through ComfyUI's ``CLIP`` (as CLIP Text
    Encode encodes it: ``encode_from_tokens(tokenize(text))``)."""
    out = {}
    for text in texts:
        encoded = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True, return_dict=True)
        out[text] = encoded["cond"]
    return out


# -------------------------------------------------------------------------------------------------- memory
def identity_bank_factor(rate: float, identity_frames: int) -> float:
    """How much more memory a story model call may need than the plain call of the same batch, at most.

    Consistent self-attention gives each frame's ``N`` tokens ``N + E`` keys/values: its own plus the shared sample
    of the identity frames of its CFG chunk, ``E <= rate * identity_frames * N`` (a ``rate`` share of each identity
    frame's tokens, the frame's own sample included in the tensor and masked out; fewer when only the subjects' box
    tokens are candidates). Attention's memory (the key/value copies and, without a fused kernel, the ``N x keys``
    scores) grows linearly in the keys, and no other part of the model grows at all, so scaling ComfyUI's whole
    per-model estimate by ``(N + E) / N = 1 + rate * identity_frames`` bounds the story call from above (the
    frames x CFG batch itself the estimate already sees through the latent's batch size)."""
    return 1.0 + float(rate) * max(int(identity_frames), 0)


def account_for_identity_bank(clone, factor: float) -> None:
    """Scale ComfyUI's memory estimate of ``clone`` by ``factor`` (:func:`identity_bank_factor`).

    * An object patch of the BaseModel's ``memory_usage_factor`` (read by ``BaseModel.memory_required``): applied
      whenever ComfyUI loads this clone, so every estimate made while it is loaded sees the bank (the per-step
      batching of ``calc_cond_batch``, and ``prepare_sampling`` when the clone is still loaded from a run before).
    * A ``PREPARE_SAMPLING`` wrapper for the one estimate made *before* the object patches apply (the first load of
      the clone: ``_prepare_sampling`` estimates, then loads): it hands that estimate a noise batch scaled by the
      same factor (``memory_required`` is linear in the batch), and does nothing once the patch is in place.

    A story applied again to a story-patched ``MODEL`` replaces the old factor instead of compounding it."""
    extension = importlib.import_module("comfy.patcher_extension")
    kind = extension.WrappersMP.PREPARE_SAMPLING
    previous = clone.get_wrappers(kind, MEMORY_KEY)
    base = previous[0].lay2story_base_factor if previous else clone.get_model_object("memory_usage_factor")
    clone.remove_wrappers_with_key(kind, MEMORY_KEY)
    if factor <= 1.0:
        if previous:
            clone.add_object_patch("memory_usage_factor", base)
        return
    patched = base * factor
    clone.add_object_patch("memory_usage_factor", patched)

    def prepare_sampling(executor, model, noise_shape, *args, **kwargs):
        if getattr(model.model, "memory_usage_factor", patched) != patched:  # not loaded yet: no object patch
            noise_shape = [math.ceil(noise_shape[0] * factor), *noise_shape[1:]]
        return executor(model, noise_shape, *args, **kwargs)

    prepare_sampling.lay2story_base_factor = base
    clone.add_wrapper_with_key(kind, MEMORY_KEY, prepare_sampling)
    logger.debug("Lay2Story: memory estimate x%.2f for the identity bank (memory_usage_factor %.3g -> %.3g)",
                 factor, base, patched)


# ---------------------------------------------------------------------------------------------------- PixArt
def _pixart_extra(model, story, clip, vae, references, bundle, subject_scale: float) -> dict:
    """``StoryPatch.extra`` of a PixArt ``MODEL`` (:func:`~.comfy.arch_pixart.pixart_patch_extra`: the mode, the
    subject branch, its captions through the T5 ``CLIP`` and the references through the ``VAE``). Without a
    ``CLIP`` the story's captions are left out (no regional captions), as on the other architectures."""
    arch_pixart = importlib.import_module(".comfy.arch_pixart", __package__)
    return arch_pixart.pixart_patch_extra(model, story, clip=clip, vae=vae, references=references,
                                          subject_branch=bundle, subject_scale=subject_scale,
                                          subject_captions=clip is not None)


class L2S_ApplyStory:
    NODE_ID = "L2S_ApplyStory"
    DISPLAY_NAME = "Lay2Story Apply Story"
    CATEGORY = "Lay2Story/sampling"
    DESCRIPTION = (
        "Makes a MODEL draw a whole story with consistent characters under ComfyUI's own KSampler, KSamplerAdvanced "
        "or SamplerCustomAdvanced (any sampler and scheduler): StoryDiffusion's consistent self-attention across "
        "the frames (SD1.5, SDXL, FLUX, PixArt), restricted to the characters' boxes when the story has a layout, "
        "box-restricted region captions with a CLIP (SD1.5 / SDXL), and PixArt's trained subject branch. Feed the "
        "sampler Lay2Story Story Conditioning and Lay2Story Empty Story Latent (one batch element per frame)."
    )
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model carrying the story (the input model is unchanged); sample it with a "
                       "latent of one batch element per frame.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to draw the story with (Load Checkpoint / Load Diffusion "
                                               "Model; LoRAs and other patches applied before or after work): "
                                               "SD1.5, SDXL, FLUX.1 or PixArt-alpha/-Sigma."}),
                "story": ("L2S_STORY", {"tooltip": "The story: characters, one prompt per frame, layout."}),
                "rate": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                   "tooltip": "Share of the identity frames' tokens each frame also attends to "
                                              "(StoryDiffusion: 0.5; higher: more consistent, less varied; 0: the "
                                              "plain model)."}),
                "blocks": ("STRING", {"default": SECOND_HALF, "multiline": False,
                                      "tooltip": "Where frames share tokens: second_half (StoryDiffusion: the "
                                                 "UNet's decoder, a transformer's second half), all, or "
                                                 "self-attention site indices like '0,2,5'."}),
                "identity_frames": ("INT", {"default": 0, "min": 0, "max": MAX_IDENTITY_FRAMES,
                                            "tooltip": "How many of the first frames share their tokens (the others "
                                                       "only look at them); 0: min(frames, 4)."}),
                "start_step": ("INT", {"default": 1, "min": 0, "max": MAX_START_STEP,
                                       "tooltip": "Steps before this one are plain (StoryDiffusion: 1, the first "
                                                  "step sets each frame's own composition)."}),
            },
            "optional": {
                "layout": ("L2S_LAYOUT", {"tooltip": "A layout to apply to the story first (frame i gets its frame "
                                                     "i subjects): sharing stays inside the characters' boxes."}),
                "clip": ("CLIP", {"tooltip": "The model's CLIP: encodes each captioned box's region caption (its "
                                             "character's identity and the frame prompt), so each box's tokens "
                                             "attend to their own character (SD1.5 / SDXL). Without it: no regional "
                                             "captions."}),
                "subject_branch": ("L2S_SUBJECT_BRANCH", {
                    "tooltip": "From Lay2Story Subject Branch Loader: PixArt only, Lay2Story mode (the trained "
                               "branch keeps characters in their boxes and like their references)."}),
                "reference": ("L2S_REFERENCE", {"tooltip": "Reference pictures of characters for the subject "
                                                           "branch (PixArt Lay2Story mode; needs vae)."}),
                "vae": ("VAE", {"tooltip": "The VAE the reference pictures are encoded with (PixArt Lay2Story "
                                           "mode)."}),
                "subject_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": MAX_SUBJECT_SCALE, "step": 0.05,
                                            "tooltip": "Layout strength of the subject branch (PixArt Lay2Story "
                                                       "mode): 0 = the plain model, 1 = as trained."}),
            },
        }

    def apply(self, model, story, rate: float = 0.5, blocks: str = SECOND_HALF, identity_frames: int = 0,
              start_step: int = 1, layout: Layout | None = None, clip=None, subject_branch=None, reference=None,
              vae=None, subject_scale: float = 1.0) -> tuple:
        # 1. every input checked before anything is patched (errors: one line naming the input)
        story = check_story(story)
        if layout is not None:
            if not isinstance(layout, Layout):
                raise ValueError(f"layout: expected an L2S_LAYOUT, got {type(layout).__name__}")
            story = apply_layout_to_story(story, layout, field="layout")
        config = ConsistencyConfig.from_user(rate, blocks)  # errors name rate / blocks
        config = dataclasses.replace(config, start_step=_int_in(start_step, "start_step", 0, MAX_START_STEP))
        identity_frames = _int_in(identity_frames, "identity_frames", 0, MAX_IDENTITY_FRAMES)
        subject_scale = _float_in(subject_scale, "subject_scale", 0.0, MAX_SUBJECT_SCALE)
        glue = _glue()
        architecture = glue.architecture_of(model, "model")  # a MODEL of a supported architecture
        pixart = architecture == "PixArtMS"
        bundle = None
        if subject_branch is not None:
            if not pixart:
                raise ValueError(f"subject_branch: only for a PixArt MODEL (Lay2Story mode); this model is "
                                 f"{glue.ARCHITECTURES[architecture][0]}")
            bundle = check_subject_branch(subject_branch)
        references = None
        if reference is not None:
            references = check_references(reference)
            if vae is None:
                raise ValueError("reference: the reference pictures need the vae input (they are encoded with it)")
            if bundle is None:
                raise ValueError("reference: reference pictures are read by the subject branch (PixArt Lay2Story "
                                 "mode): connect subject_branch, or disconnect reference")
        if vae is not None:
            vae = check_vae(vae)
        if clip is not None:
            clip = check_clip(clip)
        elif bundle is not None:
            raise ValueError("clip: the subject branch reads the story's captions: connect the PixArt CLIP (T5)")
        batch = StoryBatch(story, config, identity_frames or None)  # identity_frames beyond the story: ValueError
        # 2. the story patch: region captions through the CLIP (SD / SDXL), PixArt's mode, branch and references
        captions, extra = None, {}
        if pixart:
            extra = _pixart_extra(model, story, clip, vae, references, bundle, subject_scale)
        elif clip is not None and architecture == "UNetModel":
            captions = encode_captions(clip, batch.region_captions())
        elif clip is not None:
            logger.info("clip: regional captions are not used on %s (its boxes steer the sharing)",
                        glue.ARCHITECTURES[architecture][0])
        patch = glue.StoryPatch(batch, captions, extra)
        # 3. the clone: the adapter patches it (ValueError naming model / blocks / clip before it patches)
        patched = glue.apply_story(model, patch, "model")
        shares = extra.get("mode", "training_free") == "training_free"  # PixArt's lay2story mode: the branch only
        if not shares:
            logger.info("rate, blocks, identity_frames, start_step: unused in PixArt's Lay2Story mode (the subject "
                        "branch keeps the characters)")
        account_for_identity_bank(patched, identity_bank_factor(config.rate if shares else 0.0,
                                                                batch.identity_frames))
        return (patched,)


def _glue():
    """``nodes/comfy/story_patch.py``, imported when the node runs (the registry loads without the ComfyUI glue)."""
    return importlib.import_module(".comfy.story_patch", __package__)
