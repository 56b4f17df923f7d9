"""``L2S_StorySampler``: every frame of a story with ``lay2story_core``'s ``StoryPipeline``, with ComfyUI's
progress bar, latent previews, Cancel and memory release.

One sampler serves two kinds of models: the pack's own (``L2S_MODEL`` + ``L2S_TEXT_ENCODER``, from diffusers or
pipeline folders and the embedded demo) and ComfyUI's (``MODEL`` from Load Checkpoint / Load Diffusion Model,
``CLIP`` from Load CLIP, ``VAE``; an ``L2S_SUBJECT_BRANCH`` beside them). Either way ComfyUI's model management places
the weights, and the sampler returns ``LATENT`` (all frames as one batch) and the decoded ``IMAGE``.
"""

from __future__ import annotations

import logging

import torch

from lay2story_core.consistency import SECOND_HALF, ConsistencyConfig
from lay2story_core.consistency.box_control import BOX_STRENGTH
from lay2story_core.latents import LatentNormalization
from lay2story_core.pipelines import SCHEDULERS, StoryPipeline, make_scheduler
from lay2story_core.pipelines.auto_layout import AUTO_LAYOUT_CHOICES
from lay2story_core.pipelines.manifest import MAX_INFERENCE_STEPS, check_guidance_scale, check_num_inference_steps
from lay2story_core.pipelines.modes import AUTO, MODE_NAMES, resolve_mode
from lay2story_core.pipelines.scales import story_scales
from lay2story_core.story import Layout, Story

from . import comfy_env
from .bundles import StoryModel, TextEncoderBundle, check_model, check_subject_branch, check_text_encoder
from .layout_editor import apply_layout_to_story
from .model_inputs import model_inputs
from .reference import check_references
from .story_nodes import check_story
from .story_result import StoryResult

logger = logging.getLogger(__name__)

SAMPLER_MODES = (AUTO, *MODE_NAMES)
MAX_SEED = 0xFFFFFFFFFFFFFFFF

__all__ = ["SCHEDULERS", "L2S_StorySampler", "build_pipeline", "make_scheduler"]


def build_pipeline(model: StoryModel, text_encoder: TextEncoderBundle, scheduler: str) -> StoryPipeline:
    pipe = StoryPipeline(tokenizer=text_encoder.tokenizer, text_encoder=text_encoder.encoder, vae=model.vae,
                         transformer=model.transformer, scheduler=make_scheduler(scheduler, model.scheduler_config),
                         subject_branch=model.subject_branch)
    pipe.trained_for = model.trained_for  # a story outside it: the pipeline logs one warning line
    pipe.auto_layout = model.auto_layout  # the folder's choice for auto_layout="model"
    return pipe


def trained_for_warning(models: dict, story: Story, settings: dict) -> str | None:
    """The pipeline's one warning line for a story the connected model was not trained for (its ``lay2story.json``
    declares size and vocabulary; ComfyUI's own ``MODEL`` declares nothing), for the node's UI text."""
    declared = models["model"].trained_for if "model" in models else None
    if declared is None:
        return None
    return declared.warning(story, settings["width"], settings["height"])


def _int_in(value: object, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{field}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def model_sockets(model=None, text_encoder=None, pixart=None, clip=None, vae=None, subject_branch=None) -> dict:
    """The connected model inputs, checked: ``{"model", "text_encoder"}`` (the pack's loaders) or ``{"pixart",
    "clip", "vae", "subject_branch"}`` (ComfyUI's own, the branch optional); ``ValueError`` naming the input."""
    native = pixart is not None or clip is not None or vae is not None
    if native and (model is not None or text_encoder is not None):
        raise ValueError("model: connect either a Lay2Story model + text_encoder or a pixart MODEL + clip + vae, "
                         "not both")
    if native:
        for name, value in (("pixart", pixart), ("clip", clip), ("vae", vae)):
            if value is None:
                raise ValueError(f"{name}: the pixart MODEL needs clip and vae connected too")
        return {"pixart": pixart, "clip": clip, "vae": vae, "subject_branch": subject_branch}
    if model is None:
        raise ValueError("model: connect a Lay2Story Model Loader, or a pixart MODEL + clip + vae")
    model = check_model(model)
    if text_encoder is None:
        raise ValueError("text_encoder: connect a Lay2Story Text Encoder Loader (with the model input)")
    text_encoder = check_text_encoder(text_encoder)
    if subject_branch is not None:
        raise ValueError("subject_branch: only for a pixart MODEL; the Lay2Story model carries its own")
    return {"model": model, "text_encoder": text_encoder}


class L2S_StorySampler:
    NODE_ID = "L2S_StorySampler"
    DISPLAY_NAME = "Lay2Story Story Sampler"
    CATEGORY = "Lay2Story/sampling"
    DESCRIPTION = (
        "Generates every frame of a story so the character stays the same: lay2story uses the trained subject "
        "branch (boxes, subject captions, reference image), training_free uses StoryDiffusion-style consistent "
        "attention on plain PixArt, none is plain PixArt. Frames are denoised together; long stories in chunks."
    )
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE", "LATENT", "L2S_STORY_RESULT")
    RETURN_NAMES = ("images", "latent", "story_result")
    OUTPUT_TOOLTIPS = (
        "All frames of the story, in order (decoded with the model's VAE).",
        "All frames' final latents as one batch (unscaled VAE latents, as ComfyUI's VAE Decode expects).",
        "The finished story for Lay2Story Redo Frames (frames, latents, initial noise and settings; small, and "
        "freed with this node's cached outputs).",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "story": ("L2S_STORY", {"tooltip": "The story: characters, one prompt per frame, layout."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Random seed: the same seed and settings give the same story."}),
                "steps": ("INT", {"default": 25, "min": 1, "max": MAX_INFERENCE_STEPS,
                                  "tooltip": "Denoising steps per frame (the paper: 25; the embedded "
                                             "ShapeStory demo: 16)."}),
                "cfg": ("FLOAT", {"default": 4.5, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (the paper: 4.5; the embedded "
                                             "ShapeStory demo: 2, its lay2story.json; 1 or less: off)."}),
                "scheduler": (list(SCHEDULERS), {"default": "dpmsolver++",
                                                 "tooltip": "Sampler (the paper: DPM-Solver++; the embedded "
                                                            "ShapeStory demo: euler_a, its scheduler folder)."}),
                "mode": (list(SAMPLER_MODES), {
                    "default": "auto",
                    "tooltip": "auto: lay2story when the model has a subject branch, else training_free. "
                               "lay2story: trained branch; training_free: consistent attention; none: plain "
                               "PixArt."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                                  "tooltip": "Frame width in pixels; 0: the story's."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                                   "tooltip": "Frame height in pixels; 0: the story's."}),
                "chunk_size": ("INT", {"default": 0, "min": 0, "max": 256,
                                       "tooltip": "Frames denoised together; 0: all frames at once. Smaller "
                                                  "chunks bound memory for long stories."}),
                "identity_frames": ("INT", {"default": 0, "min": 0, "max": 256,
                                            "tooltip": "With chunks: frames generated first that later chunks look "
                                                       "at for the identity; 0: min(chunk size, 4)."}),
                "subject_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05,
                                            "tooltip": "Layout strength of the subject branch for the whole story "
                                                       "(lay2story mode): 0 = the plain global branch, 1 = as "
                                                       "trained."}),
                "character_scales": ("STRING", {"default": "", "multiline": False,
                                                "tooltip": "Per-character layout strength on top of subject_scale, "
                                                           "e.g. 'hero=1.2, cat=0.8'; characters not named: 1."}),
                "consistency_rate": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                               "tooltip": "training_free mode: share of the identity frames' "
                                                          "tokens each frame also attends to (StoryDiffusion: "
                                                          "0.5; higher: more consistent, less varied)."}),
                "consistency_blocks": ("STRING", {"default": SECOND_HALF, "multiline": False,
                                                  "tooltip": "training_free mode: blocks with consistent "
                                                             "self-attention: second_half (StoryDiffusion), all "
                                                             "(small models need it), or indices like '0,2,5'."}),
            },
            "optional": {
                **model_inputs(
                    model="From Lay2Story Model Loader (diffusers or pipeline folders, the embedded demo). Or "
                          "connect pixart + clip + vae instead.",
                    text_encoder="From Lay2Story Text Encoder Loader (with model).",
                ),
                "layout": ("L2S_LAYOUT", {"tooltip": "A layout to apply to the story first (frame i gets its "
                                                     "frame i subjects)."}),
                "reference": ("L2S_REFERENCE", {"tooltip": "Reference images of characters (lay2story mode); a "
                                                           "character's here wins over its cast picture."}),
                **model_inputs(
                    pixart="A PixArt-alpha/-Sigma MODEL from ComfyUI's Load Checkpoint or Load Diffusion Model "
                           "(LoRAs applied by core nodes work).",
                    clip="The T5 from Load CLIP (type pixart; fp8/GGUF encoders work): every caption of the story "
                         "is encoded through it.",
                    vae="The VAE for the pixart MODEL: references are encoded and frames decoded through it.",
                    subject_branch="From Lay2Story Subject Branch Loader, for the pixart MODEL (lay2story mode).",
                ),
                # a widget added after the shipped ones (optional: saved workflows without it keep working)
                "box_strength": ("FLOAT", {"default": BOX_STRENGTH, "min": 0.0, "max": 1.0, "step": 0.05,
                                           "tooltip": "training_free mode: box control, the share of the first "
                                                      "steps drawn box by box so characters land in their boxes "
                                                      "(0: boxes only steer the region captions and the sharing)."}),
                "auto_layout": (list(AUTO_LAYOUT_CHOICES), {
                    "default": "model",
                    "tooltip": "lay2story mode, characters without a box (layout off): on = the model places each "
                               "one in the first steps and draws it in that box (the boxes go into story_result); "
                               "off = no box (the paper's w/o lc); model = the model folder's choice (the embedded "
                               "demo: on)."}),
            },
        }

    def sample(self, model: StoryModel | None = None, text_encoder: TextEncoderBundle | None = None, story=None,
               seed: int = 0, steps: int = 25, cfg: float = 4.5, scheduler: str = "dpmsolver++", mode: str = AUTO,
               width: int = 0, height: int = 0, chunk_size: int = 0, identity_frames: int = 0,
               subject_scale: float = 1.0, character_scales: str = "", consistency_rate: float = 0.5,
               consistency_blocks: str = SECOND_HALF, layout: Layout | None = None, reference=None, pixart=None,
               clip=None, vae=None, subject_branch=None, box_strength: float = BOX_STRENGTH,
               auto_layout: str = "model") -> tuple | dict:
        """``(images, latent, story_result)``; with a story the model was not trained for (size, words), ComfyUI's
        ``{"ui": {"text": [warning]}, "result": ...}`` so the node shows the warning line too."""
        models = model_sockets(model, text_encoder, pixart, clip, vae, subject_branch)
        story = check_story(story)
        seed = _int_in(seed, "seed", 0, MAX_SEED)
        steps = check_num_inference_steps(steps, "steps")
        for name, value in (("width", width), ("height", height), ("chunk_size", chunk_size),
                            ("identity_frames", identity_frames)):
            _int_in(value, name, 0, 4096)
        check_guidance_scale(cfg, "cfg")
        if mode not in SAMPLER_MODES:
            raise ValueError(f"mode: expected one of {SAMPLER_MODES}, got {mode!r}")
        if layout is not None:
            if not isinstance(layout, Layout):
                raise ValueError(f"layout: expected an L2S_LAYOUT, got {type(layout).__name__}")
            story = apply_layout_to_story(story, layout, field="layout")
        scales = story_scales(story, subject_scale, character_scales)
        consistency = ConsistencyConfig.from_user(consistency_rate, consistency_blocks, box_strength,
                                                  rate_field="consistency_rate", blocks_field="consistency_blocks",
                                                  box_strength_field="box_strength")
        references = None if reference is None else check_references(reference)
        if auto_layout not in AUTO_LAYOUT_CHOICES:
            raise ValueError(f"auto_layout: expected one of {tuple(AUTO_LAYOUT_CHOICES)}, got {auto_layout!r}")
        if identity_frames and not chunk_size:
            logger.info("identity_frames is used with chunk_size only; all frames are denoised together")
        settings = {
            "references": references, "num_inference_steps": steps, "guidance_scale": float(cfg),
            "height": height or None, "width": width or None, "seed": seed, "chunk_size": chunk_size or None,
            "identity_frames": (identity_frames or None) if chunk_size else None, "subject_scale": scales,
            "consistency": consistency, "auto_layout": AUTO_LAYOUT_CHOICES[auto_layout],
        }
        outputs = self.run(models, story, mode, scheduler, settings)
        warning = trained_for_warning(models, story, settings)
        return outputs if warning is None else {"ui": {"text": [warning]}, "result": outputs}

    def run(self, models: dict, story: Story, mode: str, scheduler: str, settings: dict, sample=None) -> tuple:
        """Sample with the model sockets ``models`` (``model`` + ``text_encoder``, or ``pixart`` + ``clip`` + ``vae``
        + ``subject_branch``) and pipeline settings ``settings``: ``(images, latent, story_result)``. ``sample(pipe,
        story, kwargs)`` replaces the pipeline call (Lay2Story Redo Frames: a redo)."""
        sample = sample or (lambda pipe, story, kwargs: pipe(story, **kwargs))
        if "pixart" in models:
            native = (models[k] for k in ("pixart", "clip", "vae", "subject_branch"))
            images, latent, result, run_mode = self._sample_native(*native, story, mode, scheduler, settings, sample)
        else:
            images, latent, result, run_mode = self._sample_own(models["model"], models["text_encoder"], story,
                                                                mode, scheduler, settings, sample)
        return images, latent, StoryResult.of(result, story, images, run_mode, scheduler, settings)

    @staticmethod
    def _progress(steps: int, previewer):
        pbar = comfy_env.progress_bar(steps)

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            comfy_env.throw_if_interrupted()  # Cancel stops within one step
            preview = previewer(latents) if previewer is not None else None
            pbar.update_absolute(step, total, preview)  # inside ComfyUI also a Cancel point

        return on_step

    def _sample_own(self, model: StoryModel, text_encoder: TextEncoderBundle, story: Story, mode: str,
                    scheduler: str, settings: dict, sample):
        run_mode = resolve_mode(mode, model.has_subject_branch)
        pipe = build_pipeline(model, text_encoder, scheduler)
        encode_device = text_encoder.device or model.device
        on_step = self._progress(settings["num_inference_steps"], comfy_env.latent_previewer(model.device))
        managed = bool(model.patchers or text_encoder.patchers)
        try:
            if managed:  # ComfyUI places the pack's models (whole: diffusers modules cannot run partially loaded)
                from .comfy import host

                host.model_management().load_models_gpu([*text_encoder.patchers, *model.patchers],
                                                        force_full_load=True)
            else:
                text_encoder.encoder.to(encode_device)
            result = sample(pipe, story, dict(mode=run_mode, max_sequence_length=model.max_text_tokens,
                                              offload_text_encoder=text_encoder.offload and not managed,
                                              callback=on_step, output_type="pt", **settings))
        finally:
            if text_encoder.offload and not managed:
                text_encoder.encoder.to(comfy_env.offload_device())
            comfy_env.soft_empty_cache()
        images = result.images.detach().float().permute(0, 2, 3, 1).cpu().contiguous()
        samples = LatentNormalization.from_vae(model.vae).from_model(result.latents.detach().float().cpu())
        return images, {"samples": samples}, result, run_mode

    def _sample_native(self, pixart, clip, vae, subject_branch, story: Story, mode: str, scheduler: str,
                       settings: dict, sample):
        from .comfy import host
        from .comfy.pipeline import ComfyStoryPipeline

        bundle = None if subject_branch is None else check_subject_branch(subject_branch)
        host.check_native_model(pixart, "pixart")
        run_mode = resolve_mode(mode, bundle is not None)
        pipe = ComfyStoryPipeline(pixart, host.check_clip(clip), host.check_vae(vae), make_scheduler(scheduler, None),
                                  subject_branch=None if bundle is None else bundle.branch,
                                  branch_patcher=None if bundle is None else bundle.patcher)
        height, width = settings["height"] or story.height, settings["width"] or story.width
        frames = min(settings["chunk_size"] or story.num_frames, story.num_frames)
        batch = frames * (2 if settings["guidance_scale"] > 1.0 else 1)
        pipe.memory_shape = [batch, pipe.latent_channels, height // pipe.vae_scale_factor,
                             width // pipe.vae_scale_factor]
        on_step = self._progress(settings["num_inference_steps"],
                                 comfy_env.latent_previewer(pipe.transformer.device, pipe.latent_format))
        try:
            result = sample(pipe, story, dict(mode=run_mode, callback=on_step, output_type="pt", **settings))
            samples = pipe.latent_format.process_out(result.latents.detach().float())  # raw VAE latents
            images = result.images.float().clamp(0, 1).permute(0, 2, 3, 1)
        finally:
            comfy_env.soft_empty_cache()
        return images.cpu().contiguous(), {"samples": samples.cpu()}, result, run_mode
