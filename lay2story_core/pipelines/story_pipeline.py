"""``StoryPipeline``: sample a whole story with Lay2Story, training-free consistency, or plain PixArt.

Structure follows diffusers' ``PixArtAlphaPipeline`` (``check_inputs``, ``encode_prompt``, ``prepare_latents``, a
numbered ``__call__``) with its own denoising loop, because the subject branch and the story processors need inputs
PixArt's ``__call__`` cannot pass. Frames of one story are batch elements and are denoised jointly; long stories use
StoryDiffusion's write/read scheme (identity frames first, the rest in chunks reading their keys/values).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
from diffusers.utils import BaseOutput

from ..attention import SubjectSlots, TokenPacking
from ..attention.backends import BackendChooser
from ..conditioning import REFERENCE_CAPTION, FrameSpec, build_subject_inputs, plan_subject_slots
from ..consistency import (
    DEFAULT_IDENTITY_FRAMES,
    ConsistencyConfig,
    StoryConsistencyContext,
    story_consistency_processors,
)
from ..consistency.box_control import BoxPlan, box_captions, region_captions, slot_region_texts
from ..latents import LatentNormalization
from ..models import IdentityBank, Lay2StoryTransformer, SubjectInputs
from ..story import Box, Story, parse_story
from ..text import DEFAULT_MAX_LENGTH, encode_texts
from .auto_layout import AutoLayout, check_auto_layout, place_subjects, resolve_auto_layout, unplaced
from .images import to_pil, to_tensor_image
from .manifest import (
    MAX_INFERENCE_STEPS,
    SamplingDefaults,
    check_guidance_scale,
    check_max_sequence_length,
    check_num_inference_steps,
)
from .modes import MODE_NAMES, Mode, get_mode
from .trained_for import TrainedFor

if TYPE_CHECKING:
    from .redo import RedoPlan
    from .redo_identity import IdentityCache

logger = logging.getLogger(__name__)

MODES = MODE_NAMES  # the names; the Mode objects are lay2story_core.pipelines.modes.MODES
# identity frames of the write/read scheme when a call names none: at most this many (StoryDiffusion's 4); also the
# kept frames a redo reads (pipelines.redo)
StepCallback = Callable[[int, int, torch.Tensor], "bool | None"]
# diffusers' callback_on_step_end(pipe, step, timestep, callback_kwargs) -> callback_kwargs
StepEndCallback = Callable[["StoryPipeline", int, torch.Tensor, dict], "dict | None"]


class GenerationCancelled(RuntimeError):
    """Raised when the step callback asks to stop; nothing partial is returned."""


@dataclass
class ReferenceImage:
    """A character's reference image (PIL, path or ``(3, H, W)`` tensor in [0, 1]) and the character's box in it."""

    image: object
    box: Box | None = None


@dataclass
class StoryPipelineOutput(BaseOutput):
    """``images``: PIL images, or ``(F, 3, H, W)`` in [0, 1] for ``output_type="pt"`` (the latents for
    ``"latent"``); ``latents``: ``(F, 4, h, w)`` final latents (scaled, as the transformer sees them); ``story``: the
    story as sampled (with the boxes auto layout placed, :mod:`.auto_layout`; a layout-on call with it draws the same
    frames)."""

    images: list | torch.Tensor
    latents: torch.Tensor
    story: Story | None = None


def check_subject_scale(subject_scale: object, story: Story, field: str = "subject_scale") -> None:
    """A number >= 0, or a mapping of the story's character ids to numbers >= 0; ``ValueError`` naming the field."""

    def ok(value: object) -> bool:
        return (not isinstance(value, bool) and isinstance(value, (int, float)) and value == value
                and 0.0 <= value <= 100.0)

    if isinstance(subject_scale, Mapping):
        for char_id, value in subject_scale.items():
            story.character(char_id)  # LayoutError for unknown ids
            if not ok(value):
                raise ValueError(f"{field}[{char_id!r}]: expected a number in [0, 100], got {value!r}")
    elif not ok(subject_scale):
        raise ValueError(f"{field}: expected a number in [0, 100] or a mapping per character, got {subject_scale!r}")


def default_scheduler() -> DPMSolverMultistepScheduler:
    """DPM-Solver++ multistep with PixArt's training noise schedule (linear betas, 1000 steps)."""
    return DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                       num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2)


class StoryPipeline(DiffusionPipeline):
    """Lay2Story story sampler.

    Components: ``tokenizer`` + ``text_encoder`` (T5), ``vae`` (``AutoencoderKL``), ``transformer`` (PixArt global
    branch), ``subject_branch`` (optional, needed by ``mode="lay2story"``), ``scheduler`` (default DPM-Solver++).
    """

    # the subject branch runs interleaved with the transformer: outside the chain it gets its own offload hook
    # (onloaded by its forward, offloaded at the end of the call), as diffusers does for ControlNets
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["subject_branch", "scheduler"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, tokenizer, text_encoder, vae, transformer, scheduler=None, subject_branch=None) -> None:
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                              scheduler=scheduler or default_scheduler(), subject_branch=subject_branch)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def _execution_device(self) -> torch.device:
        """Where the transformer runs: its offload hook's device under ``enable_model_cpu_offload``, else where its
        weights are (diffusers takes the first component's device: the text encoder's, which is the CPU when the
        encoder is offloaded by hand)."""
        hook = getattr(self.transformer, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        return torch.device(device) if device is not None else self.transformer.device

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` in ``callback_on_step_end`` to stop; unlike diffusers, which returns the
        partly denoised images, the call raises :class:`GenerationCancelled` (nothing partial is returned)."""
        return getattr(self, "_interrupt", False)

    def enable_sequential_cpu_offload(self, *args, **kwargs) -> None:
        raise NotImplementedError(
            "enable_sequential_cpu_offload: not supported (the story model reads the transformer's parameters "
            "outside its submodules' forwards, so per-submodule hooks cannot place them); use "
            "enable_model_cpu_offload")

    # what a call that chooses no steps / guidance scale samples with: the folder's lay2story.json "sampling" (set per
    # pipeline by load_story_pipeline), else PixArt-alpha's 25 steps and CFG 4.5; and the manifest's "name"
    sampling_defaults: SamplingDefaults = SamplingDefaults()
    model_name: str | None = None
    # what the model folder's lay2story.json says it was trained for (size, vocabulary): a story outside it gets one
    # warning line (pipelines.trained_for); None: no declaration, no warning
    trained_for: TrainedFor | None = None
    # the folder's auto layout (lay2story.json "auto_layout"): what a call with auto_layout=None runs; None: off
    auto_layout: AutoLayout | None = None
    # the caption length (T5 tokens) a call that chooses none pads and cuts to: the one the model was trained with,
    # 120 for PixArt-alpha, 300 for PixArt-Sigma (set by load_story_pipeline from the checkpoint or the folder's
    # lay2story.json, and saved there)
    max_sequence_length: int = DEFAULT_MAX_LENGTH

    @property
    def max_inference_steps(self) -> int:
        """The most denoising steps a call may ask for: more than the scheduler's training timesteps fail mid-way."""
        return min(MAX_INFERENCE_STEPS, int(self.scheduler.config.get("num_train_timesteps", MAX_INFERENCE_STEPS)))

    # "auto": padded SDPA on CPU; on CUDA the fastest of padded / nested / flex, measured once per pipeline by a
    # BackendChooser (lay2story_core.attention.backends); or one of those names
    attention_backend: str = "auto"

    def attention_settings(self, joint: bool = True) -> dict:
        """``TokenPacking.build`` arguments for the subject branch's packed attention. The write/read passes of long
        stories add identity-bank keys, which only the padded backend takes."""
        if not joint:
            return {"backend": "padded"}
        chooser = None
        if self.attention_backend == "auto" and self._execution_device.type == "cuda":
            chooser = self.__dict__.get("_backend_chooser")
            if chooser is None:
                cfg = self.transformer.config
                chooser = BackendChooser(heads=int(cfg.num_attention_heads), head_dim=int(cfg.attention_head_dim),
                                         dtype=self.transformer.dtype)
                self.__dict__["_backend_chooser"] = chooser  # per pipeline, measured on first use
        return {"backend": self.attention_backend, "chooser": chooser}

    def _onload(self, module: torch.nn.Module | None) -> None:
        """Under model CPU offload, move ``module`` to the execution device (offloading the previous model of the
        chain) as its hook would on a forward call: the story model calls the transformer's submodules, never its
        ``forward``."""
        hook = getattr(module, "_hf_hook", None) if module is not None else None
        if hook is not None and hasattr(hook, "prev_module_hook"):
            hook.pre_forward(module)

    # -- diffusers save/load -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> StoryPipeline:
        """A local pipeline folder (with or without ``model_index.json``, e.g. the shipped demo) through the project's
        strict loaders (:func:`~lay2story_core.pipelines.loading.load_story_pipeline`); a hub id through diffusers.

        Keyword arguments: ``torch_dtype``, ``device``, and components: ``subject_branch`` (a module, a folder such
        as a trainer's ``output_dir``, or ``None``), ``vae`` / ``text_encoder`` / ``tokenizer`` (modules or paths),
        ``transformer`` (a module), ``scheduler`` (a scheduler, or ``None`` for the folder's/default one).
        """
        path = Path(os.fspath(pretrained_model_name_or_path)).expanduser()
        if not path.is_dir():
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from .loading import load_story_pipeline

        ignored = {"use_safetensors", "local_files_only", "low_cpu_mem_usage", "variant", "cache_dir"}
        known = {"torch_dtype", "device", "subject_branch", "vae", "text_encoder", "tokenizer", "transformer",
                 "scheduler"}
        unknown = sorted(set(kwargs) - known - ignored)
        if unknown:
            raise TypeError(f"from_pretrained: unexpected argument(s) {unknown}; expected some of {sorted(known)}")
        return load_story_pipeline(path, **{k: v for k, v in kwargs.items() if k in known})

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """diffusers' layout (``model_index.json`` + a subfolder per component), written atomically
        (:func:`~lay2story_core.pipelines.loading.save_story_pipeline`)."""
        from .loading import save_story_pipeline

        save_story_pipeline(self, save_directory, **kwargs)

    # -- 0. inputs ---------------------------------------------------------------------------------------------------
    def check_inputs(self, story: Story, height: int, width: int, num_inference_steps: int, guidance_scale: float,
                     mode: str | Mode, chunk_size: int | None, identity_frames: int | None,
                     subject_scale: float | Mapping[str, float] = 1.0,
                     consistency: ConsistencyConfig | None = None) -> None:
        mode = get_mode(mode)
        if mode.consistency or consistency is not None:  # a given config is checked even where unused
            if consistency is not None and not isinstance(consistency, ConsistencyConfig):
                raise ValueError(f"consistency: expected a ConsistencyConfig, got {type(consistency).__name__}")
            config = consistency or ConsistencyConfig()
            config.active_blocks(self.num_blocks, field=config.blocks_field or "consistency.blocks")
        if mode.subject_branch and self.subject_branch is None:
            raise ValueError(f"mode: {mode.name!r} needs a subject branch; load one or use mode='training_free'")
        check_subject_scale(subject_scale, story)
        multiple = self.vae_scale_factor * self.patch_size
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(f"{name}: must be a positive multiple of {multiple}, got {value!r}")
        check_num_inference_steps(num_inference_steps, limit=self.max_inference_steps,
                                  why=" (the scheduler's training timesteps)")
        check_guidance_scale(guidance_scale)
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size: must be an integer >= 1 or None, got {chunk_size!r}")
        if identity_frames is not None and not 1 <= identity_frames <= story.num_frames:
            raise ValueError(f"identity_frames: must be in [1, {story.num_frames}], got {identity_frames!r}")

    # -- what a host provides (ComfyUI's sampler overrides these over ComfyUI's own PixArt, T5 and VAE) ----------
    @property
    def patch_size(self) -> int:
        return self.transformer.config.patch_size

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def num_blocks(self) -> int:
        """Transformer blocks of the global branch (what ``ConsistencyConfig.blocks`` indexes)."""
        return len(self.transformer.transformer_blocks)

    def project_captions(self, embeds: torch.Tensor) -> torch.Tensor:
        """``(n, L, C_text)`` -> ``(n, L, D)`` through the global branch's caption projection."""
        return self.transformer.caption_projection(embeds.to(self.transformer.dtype))

    def consistency_processors(self):
        """Context manager installing the training-free story processors on the global branch."""
        return story_consistency_processors(self.transformer)

    def encode_prompt(self, texts: Sequence[str], device: torch.device, max_length: int = DEFAULT_MAX_LENGTH):
        """T5 states ``(n, L, C)`` and mask ``(n, L)`` of ``texts``; each distinct text is encoded once."""
        return encode_texts(texts, self.tokenizer, self.text_encoder, max_length=max_length, device=device,
                            dtype=self.transformer.dtype)

    def prepared_scheduler(self, num_inference_steps: int, device: torch.device | str | None = None):
        """A fresh copy of :attr:`scheduler` with its timesteps set for ``num_inference_steps``, as diffusers'
        pipelines prepare theirs (``set_timesteps``, then ``set_begin_index(0)``): what each denoising pass steps
        with (a copy per pass: multistep solvers keep history) and what the initial noise is scaled by. The one
        rule for both: Euler-family samplers' ``init_noise_sigma`` depends on the schedule actually run (e.g.
        ``timestep_spacing="leading"`` never starts at the last training timestep), so it is read only here."""
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(num_inference_steps, device=device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return scheduler

    def prepare_latents(self, num_frames: int, height: int, width: int, generator: torch.Generator | None,
                        device: torch.device, dtype: torch.dtype, latents: torch.Tensor | None = None, *,
                        num_inference_steps: int):
        """Initial noise ``(F, C, h, w)``, drawn on the CPU so a seed gives the same story on every device, scaled
        by the ``init_noise_sigma`` of the schedule of ``num_inference_steps`` steps (:meth:`prepared_scheduler`).
        Given ``latents`` are unscaled standard-normal noise, as in diffusers."""
        shape = (num_frames, self.latent_channels, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected shape {shape}, got {tuple(latents.shape)}")
        sigma = self.prepared_scheduler(num_inference_steps, device).init_noise_sigma
        return (latents.to(device=device, dtype=torch.float32) * sigma).to(dtype)

    @torch.no_grad()
    def encode_references(self, story: Story, references: Mapping[str, ReferenceImage], height: int, width: int,
                          device: torch.device) -> dict[str, torch.Tensor]:
        """Clean, scaled VAE latents ``(4, h, w)`` of each character's reference (resized to the frame size)."""
        out = {}
        for char_id, ref in references.items():
            story.character(char_id)  # LayoutError for unknown ids
            pixels = to_tensor_image(ref.image, height, width).to(device=device, dtype=self.vae.dtype)
            out[char_id] = self.encode_pixels(pixels[None])[0].to(self.transformer.dtype)
        return out

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] on the VAE's device and dtype -> clean scaled latents ``(N, 4, h, w)`` (the
        posterior mean, normalised as the model sees latents); :meth:`decode_latents` is its inverse."""
        dist = self.vae.encode(pixels * 2 - 1).latent_dist
        return LatentNormalization.from_vae(self.vae).to_model(dist.mode())

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _story_references(self, story: Story, references) -> dict[str, ReferenceImage]:
        # a reference's picture: its file, or the story's in-memory one (a cast built in ComfyUI); its box either way
        pictures = dict(story.reference_images)
        refs = {c.id: ReferenceImage(pictures.get(c.id, c.reference.image), c.reference.box) for c in story.characters
                if c.reference is not None and pictures.get(c.id, c.reference.image) is not None}
        for char_id, ref in (references or {}).items():
            refs[char_id] = ref if isinstance(ref, ReferenceImage) else ReferenceImage(ref)
        return refs

    def _added_cond(self, batch: int, height: int, width: int, device, dtype):
        if not self.transformer.config.get("use_additional_conditions", False) and not getattr(
                self.transformer, "use_additional_conditions", False):
            return None
        return {"resolution": torch.tensor([[height, width]], device=device, dtype=dtype).repeat(batch, 1),
                "aspect_ratio": torch.tensor([[height / width]], device=device, dtype=dtype).repeat(batch, 1)}

    def _model(self) -> Lay2StoryTransformer:
        return Lay2StoryTransformer(self.transformer, self.subject_branch)

    # -- the call ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        story: Story | dict | str,
        *,
        references: Mapping[str, ReferenceImage | object] | None = None,
        mode: str | Mode = "lay2story",
        layout: bool = True,
        subject_captions: bool = True,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        chunk_size: int | None = None,
        identity_frames: int | None = None,
        consistency: ConsistencyConfig | None = None,
        max_sequence_length: int | None = None,
        offload_text_encoder: bool = False,
        bank_device: torch.device | str | None = None,
        callback: StepCallback | None = None,
        output_type: str = "pil",
        subject_scale: float | Mapping[str, float] = 1.0,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        return_dict: bool = True,
        attention_3d: bool = True,
        identity_cache: IdentityCache | None = None,
        redo: RedoPlan | None = None,
        auto_layout: AutoLayout | bool | None = None,
    ) -> StoryPipelineOutput:
        """Generate every frame of ``story``.

        Args:
            story: a :class:`Story`, its dict or JSON text, or the path (``str`` or ``Path``) of a story file.
            references: per character id, a :class:`ReferenceImage` (or a bare image); by default the story's own
                reference paths. Used by ``mode="lay2story"``.
            mode: ``"lay2story"`` (trained subject branch), ``"training_free"`` (consistent self-attention and
                regional captions on the global branch), ``"none"`` (plain PixArt, the baseline).
            layout, subject_captions: the layout toggle (boxes / subject captions on or off for the whole story).
            num_inference_steps, guidance_scale: sampling settings; ``None``: :attr:`sampling_defaults` (the model
                folder's recommendation in ``lay2story.json``, else 25 steps and CFG 4.5, as the paper).
            height, width: output size (default: the story's).
            negative_prompt: unconditional caption (default: the story's, else empty).
            seed, generator, latents: randomness (``seed`` wins over ``generator``); ``latents`` are the unscaled
                initial noise ``(F, C, h, w)`` (scaled by the schedule's ``init_noise_sigma`` here, as in diffusers).
            chunk_size: frames per denoising pass; ``None`` = all frames jointly. Longer stories: the first
                ``identity_frames`` (default ``min(chunk_size, 4)``) are generated jointly and write their keys/values,
                the rest are generated ``chunk_size`` at a time and read them.
            consistency: settings of ``mode="training_free"``: consistent self-attention, regional captions and box
                control (``ConsistencyConfig.box_strength``, the share of steps composed box by box; 0: off).
            max_sequence_length: caption length in T5 tokens (captions are padded and cut to it); ``None``:
                :attr:`max_sequence_length` (the model's: 300 for PixArt-Sigma, 120 for PixArt-alpha).
            offload_text_encoder: move T5 to the CPU after encoding (saves accelerator memory).
            bank_device: where the identity keys/values are kept (e.g. ``"cpu"`` for very long stories).
            callback: ``callback(step, total, latents)`` after every step; returning ``False`` cancels
                (:class:`GenerationCancelled`), nothing partial is returned.
            callback_on_step_end: diffusers' ``callback(pipe, step, timestep, callback_kwargs)`` after every step
                (``step`` counts from 0 over all passes); ``callback_kwargs`` holds the tensors named by
                ``callback_on_step_end_tensor_inputs`` (default ``["latents"]``, the current pass's ``(n, 4, h, w)``)
                and a returned ``"latents"`` replaces them. Setting ``pipe._interrupt = True`` stops (see
                :attr:`interrupt`). A diffusers ``PipelineCallback`` works too.
            return_dict: ``False`` returns ``(images,)`` instead of a :class:`StoryPipelineOutput`.
            output_type: ``"pil"``, ``"pt"`` or ``"latent"``.
            subject_scale: layout strength of the subject branch (``mode="lay2story"``): one number for the story,
                or per character id (characters not named keep 1.0); 0 = the global branch alone, 1 = as trained.
            attention_3d: ``False`` cuts the subject branch's masked 3D attention across frames (each frame's
                subject tokens attend within their own slot only): the paper's "w/o 3D attention" ablation.
            identity_cache: an empty :class:`~lay2story_core.pipelines.redo_identity.IdentityCache` to record every
                identity frame's per-step keys/values in (a jointly sampled story: every frame), for redoing frames
                later with ``kv="cached"``; the frames are the same as without it.
            redo: set by :func:`~lay2story_core.pipelines.redo.redo_story` (use that): the kept frames' keys/values
                are written first and only the frames it names are sampled, in read mode.
            auto_layout: ``mode="lay2story"``, subjects without a box (layout off): draft the first steps, read where
                the model put each character, sample again with it in that box (:mod:`.auto_layout`). ``None``: the
                model folder's choice (:attr:`auto_layout`; the demo: on), ``True``/``False``, or an
                :class:`~.auto_layout.AutoLayout`. The boxes come back in ``StoryPipelineOutput.story``.
        """
        # 0. Inputs
        story = parse_story(_story_source(story))
        self._interrupt = False
        step_end = self._step_end_hook(callback_on_step_end, callback_on_step_end_tensor_inputs)
        height = height or story.height
        width = width or story.width
        mode = get_mode(mode)
        num_inference_steps, guidance_scale = self.sampling_defaults.resolve(num_inference_steps, guidance_scale)
        max_sequence_length = check_max_sequence_length(
            self.max_sequence_length if max_sequence_length is None else max_sequence_length)
        self.check_inputs(story, height, width, num_inference_steps, guidance_scale, mode, chunk_size,
                          identity_frames, subject_scale, consistency)
        check_auto_layout(auto_layout)
        if output_type not in ("pil", "pt", "latent"):
            raise ValueError(f"output_type: expected 'pil', 'pt' or 'latent', got {output_type!r}")
        device = self._execution_device
        dtype = self.transformer.dtype
        if seed is not None:
            generator = torch.Generator("cpu").manual_seed(int(seed))
        do_cfg = guidance_scale > 1.0
        num_frames = story.num_frames
        negative = story.negative_prompt if negative_prompt is None else negative_prompt
        if self.trained_for is not None:  # a size or words the model was not trained for: one warning line
            warning = self.trained_for.warning(story, width, height, negative, self.model_name)
            if warning:
                logger.warning(warning)
        boxes_on = layout and mode.uses_layout
        captions_on = subject_captions and mode.uses_layout

        # 1. Encode the global captions (identity + frame prompt), the negative prompt and the subject captions
        resolved = [story.resolve_frame(i, boxes=boxes_on, captions=captions_on) for i in range(num_frames)]
        global_texts = [story.global_caption(i) for i in range(num_frames)]
        subject_texts = [s.caption for frame in resolved for s in frame] if mode.subject_branch else []
        texts = global_texts + [negative, REFERENCE_CAPTION] + subject_texts
        auto = resolve_auto_layout(auto_layout, self.auto_layout) if mode.subject_branch and redo is None else None
        to_place = unplaced(resolved) if auto is not None else []
        texts += [story.global_caption(f, without=(c,)) for f, c in to_place]  # auto layout's captions
        if mode.consistency:
            texts += region_captions(story, resolved)  # training-free regional cross-attention's texts
            if (consistency or ConsistencyConfig()).box_strength > 0:
                texts += box_captions(story, resolved)  # box control's background and character captions
        embeds, mask = self.encode_prompt(texts, device, max_sequence_length)
        text = {t: (embeds[i], mask[i]) for i, t in enumerate(texts)}
        if offload_text_encoder and device.type != "cpu":
            self.text_encoder.to("cpu")

        # 2. References (Lay2Story only)
        refs = self._story_references(story, references) if mode.references else {}
        if references and not mode.references:
            logger.warning("references are used by mode='lay2story' only; ignored in mode=%r", mode.name)
        ref_latents = self.encode_references(story, refs, height, width, device) if refs else {}

        # 3. Initial noise for all frames (independent of chunking), scaled for the schedule the passes run
        all_latents = self.prepare_latents(num_frames, height, width, generator, device, dtype, latents,
                                           num_inference_steps=num_inference_steps)

        # 4. Passes: all frames jointly, or identity frames (write) then chunks (read); a redo: the frames it samples
        #    (read), after the kept frames' keys/values (pipelines.redo); recording: a joint pass that writes
        if redo is not None:
            passes = redo.passes(chunk_size)
        elif chunk_size is None or chunk_size >= num_frames:
            passes = [(list(range(num_frames)), "joint" if identity_cache is None else "write")]
        else:
            n_ident = identity_frames or min(chunk_size, DEFAULT_IDENTITY_FRAMES)
            rest = list(range(n_ident, num_frames))
            passes = [(list(range(n_ident)), "write")] + [(rest[i:i + chunk_size], "read")
                                                           for i in range(0, len(rest), chunk_size)]
        job = _Job(self, story, resolved, text, negative, refs, ref_latents, mode, do_cfg, guidance_scale,
                   num_inference_steps, height, width, device, dtype, consistency or ConsistencyConfig(),
                   IdentityBank(storage_device=bank_device), {}, callback, len(passes), subject_scale=subject_scale,
                   attention_3d=attention_3d)
        job.step_end, job.generator = step_end, generator
        results = torch.empty_like(all_latents)
        model = self._model()
        self._onload(self.transformer)  # model CPU offload: the story model bypasses the transformer's forward
        processors = self.consistency_processors() if mode.consistency else nullcontext()
        try:
            if to_place:  # 4a. auto layout: draft, place, and sample the placed story (same noise, same step noise)
                story, resolved = place_subjects(job, model, all_latents, auto, to_place, chunk_size, captions_on)
                job = dataclasses.replace(job, story=story, resolved=resolved)
            with processors:
                if redo is not None:
                    results[list(redo.kept)] = redo.kept_latents.to(results)
                    redo.write_identity(job, model)
                for pass_index, (frames, kind) in enumerate(passes):
                    results[frames] = job.denoise(model, frames, all_latents[frames], kind, pass_index)
                    if identity_cache is not None and kind == "write":
                        identity_cache.capture(job, frames)
            job.bank.clear()

            # 5. Decode
            if output_type == "latent":
                images = results
            else:
                images = self.decode_latents(results)
                images = to_pil(images) if output_type == "pil" else images
        finally:
            self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return StoryPipelineOutput(images=images, latents=results, story=story)

    def _step_end_hook(self, callback, tensor_inputs):
        """``step_end(step, timestep, latents) -> latents`` running diffusers' ``callback_on_step_end`` and the
        interrupt check, or ``None`` when neither applies."""
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback.tensor_inputs
        names = list(tensor_inputs) if tensor_inputs is not None else ["latents"]
        for name in names:
            if name not in self._callback_tensor_inputs:
                raise ValueError(f"callback_on_step_end_tensor_inputs: {name!r} is not one of "
                                 f"{self._callback_tensor_inputs}")
        if callback is not None and not callable(callback):
            raise ValueError(f"callback_on_step_end: expected a callable, got {type(callback).__name__}")

        def step_end(step: int, timestep: torch.Tensor, latents: torch.Tensor, total: int) -> torch.Tensor:
            if callback is not None:
                outputs = callback(self, step, timestep, {"latents": latents} if "latents" in names else {})
                if isinstance(outputs, Mapping) and outputs.get("latents") is not None:
                    new = outputs["latents"]
                    if tuple(new.shape) != tuple(latents.shape):
                        raise ValueError(f"callback_on_step_end: returned latents of shape {tuple(new.shape)}, "
                                         f"expected {tuple(latents.shape)}")
                    latents = new.to(device=latents.device, dtype=latents.dtype)
            if self.interrupt:
                raise GenerationCancelled(f"interrupted at step {step + 1}/{total}")
            return latents

        return step_end

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(F, 4, h, w)`` scaled latents -> ``(F, 3, H, W)`` in [0, 1], one frame at a time (bounded memory; use
        ``vae.enable_tiling()`` for very large sizes)."""
        norm = LatentNormalization.from_vae(self.vae)
        frames = [self.vae.decode(norm.from_model(lat[None].float()).to(self.vae.dtype)).sample for lat in latents]
        return (torch.cat(frames).float() / 2 + 0.5).clamp(0, 1)


@dataclass(frozen=True, kw_only=True)
class _PassState:
    """What every model call of one denoising pass shares (built once by :meth:`_Job.prepare_pass`).

    ``cond``/``cond_mask``: ``(B, L, C)`` global captions (conditional half first); ``added``: 1024-MS
    micro-conditions or ``None``; ``subject``: subject-branch inputs with their packing, projected captions and
    per-slot scales (``mode.subject_branch``), else ``None``; ``consistency``: the training-free context
    (``mode.consistency``), else ``None``; ``box``: training-free box control's plan, else ``None``.
    """

    frames: tuple[int, ...]
    batch: int
    cond: torch.Tensor
    cond_mask: torch.Tensor
    added: dict | None
    subject: SubjectInputs | None = None
    consistency: StoryConsistencyContext | None = None
    box: BoxPlan | None = None


@dataclass
class _Job:
    """Everything one ``__call__`` shares between its denoising passes."""

    pipe: StoryPipeline
    story: Story
    resolved: list
    text: dict
    negative: str
    refs: dict
    ref_latents: dict
    mode: Mode
    do_cfg: bool
    guidance_scale: float
    num_steps: int
    height: int
    width: int
    device: torch.device
    dtype: torch.dtype
    consistency: ConsistencyConfig
    bank: IdentityBank
    training_free_bank: dict
    callback: StepCallback | None
    num_passes: int
    subject_scale: float | Mapping[str, float] = 1.0
    attention_3d: bool = True
    step_end: Callable | None = None  # StoryPipeline._step_end_hook: callback_on_step_end and interrupt
    generator: torch.Generator | None = None  # the call's: after the initial noise, stochastic samplers' step noise

    def _texts(self, texts: Sequence[str]):
        return (torch.stack([self.text[t][0] for t in texts]), torch.stack([self.text[t][1] for t in texts]))

    def _subject_inputs(self, frames: list[int], batch: int, kind: str):
        """Slots of the conditional half (the unconditional half runs without the subject branch) and, with the
        subject branch, their :class:`SubjectInputs`."""
        pipe = self.pipe
        lat_h, lat_w = self.height // pipe.vae_scale_factor, self.width // pipe.vae_scale_factor
        specs = [FrameSpec(0, tuple(self.resolved[f])) for f in frames]
        references = {(0, cid): ref.box for cid, ref in self.refs.items()}
        group_of_key = {(0, c.id): i for i, c in enumerate(self.story.characters)}
        plan = plan_subject_slots(specs, lat_h, lat_w, pipe.patch_size, references,
                                  group_of_key=group_of_key, first_reference_image=batch, device=self.device,
                                  attention_3d=self.attention_3d)
        if not self.mode.subject_branch:  # training-free: the slots alone (boxes, regions), no branch inputs
            return plan, None
        captions = list(plan.captions)  # reference slots: the planner's caption, the same rule as in training
        distinct = list(dict.fromkeys(captions))
        index = torch.tensor([distinct.index(c) for c in captions], dtype=torch.long, device=self.device)
        embeds, mask = self._texts(distinct)
        ref_latents = {(0, cid): lat for cid, lat in self.ref_latents.items()}
        self.bank.mode = "write" if kind == "write" else "read"
        return plan, build_subject_inputs(plan, embeds, mask, ref_latents, references, caption_index=index,
                                          batch_size=batch, bank=self.bank if kind != "joint" else None)

    def _consistency_context(self, frames: list[int], batch: int, plan, kind: str):
        half = len(frames)
        group = torch.tensor([0] * half + [1] * (batch - half), device=self.device)
        identity = torch.tensor([kind != "read"] * batch, device=self.device)
        ctx = StoryConsistencyContext(self.consistency, group=group, identity=identity,
                                      mode="joint" if kind == "joint" else kind, bank=self.training_free_bank)
        if plan is not None:
            n = plan.slots.tokens_per_image
            frame_slots = plan.slots.image_index < half
            masks = torch.zeros(half, n, dtype=torch.bool, device=self.device)
            for s in frame_slots.nonzero().flatten().tolist():
                masks[int(plan.slots.image_index[s])] |= plan.slots.masks[s]
            has_box = [any(sub.has_box for sub in self.resolved[f]) for f in frames]
            if any(has_box):
                ctx.subject_masks = masks.repeat(batch // half, 1)
            if any(sub.has_caption for f in frames for sub in self.resolved[f]):
                sub_slots = SubjectSlots(plan.slots.masks[frame_slots], plan.slots.image_index[frame_slots],
                                         plan.slots.group_index[frame_slots])
                packing = TokenPacking.build(sub_slots, half)
                embeds, cmask = self._texts(slot_region_texts(self.story, self.resolved, frames, plan,
                                                              frame_slots))
                projected = self.pipe.project_captions(embeds)
                ctx.regional = (packing, projected, cmask.bool())
        return ctx

    def _slot_scales(self, plan) -> float | torch.Tensor:
        """The subject scale as one number, or ``(S,)`` per slot from the per-character mapping."""
        if not isinstance(self.subject_scale, Mapping):
            return float(self.subject_scale)
        return torch.tensor([float(self.subject_scale.get(cid, 1.0)) for _, cid in plan.slot_keys],
                            device=self.device)

    def pass_subject_inputs(self, frames: list[int], batch: int, kind: str):
        """A pass's slot plan (``None`` in a mode that plans none) and, in a mode with the subject branch, its
        :class:`SubjectInputs` ready for every call of the pass (packing, projected captions, per-slot scales), else
        ``None``. ``frames`` are the first rows of ``batch``. Also how ComfyUI's KSampler adapter
        (``nodes/comfy/arch_pixart.py``) builds its calls' inputs, so both hosts share this code path."""
        if not self.mode.plans_slots:
            return None, None
        plan, subject = self._subject_inputs(frames, batch, kind)
        if not self.mode.subject_branch:
            return plan, None
        num_refs = 0 if subject.reference_images is None else subject.reference_images.shape[0]
        return plan, dataclasses.replace(
            subject, packing=TokenPacking.build(subject.slots, batch + num_refs,
                                                **self.pipe.attention_settings(joint=kind == "joint")),
            caption_states=self.pipe.project_captions(subject.caption_embeds), scale=self._slot_scales(plan))

    def prepare_pass(self, frames: list[int], kind: str) -> _PassState:
        """Everything a denoising pass's model calls share, built once per pass (the steps only change the latents
        and the timestep): captions, micro-conditions, subject slots and their packing, projected subject
        captions, per-slot scales, training-free masks and regional captions."""
        n = len(frames)
        batch = 2 * n if self.do_cfg else n
        # conditional half first, then the unconditional half
        cond, cond_mask = self._texts([self.story.global_caption(f) for f in frames])
        if self.do_cfg:
            neg, neg_mask = self._texts([self.negative] * n)
            cond, cond_mask = torch.cat([cond, neg]), torch.cat([cond_mask, neg_mask])
        added = self.pipe._added_cond(batch, self.height, self.width, self.device, self.dtype)
        plan, subject = self.pass_subject_inputs(frames, batch, kind)
        ctx = self._consistency_context(frames, batch, plan, kind) if self.mode.consistency else None
        box = None
        if self.mode.consistency:
            latent_size = (self.height // self.pipe.vae_scale_factor, self.width // self.pipe.vae_scale_factor)
            box = BoxPlan.build(self.story, frames, self.resolved, latent_size, self.pipe.patch_size,
                                self.consistency.box_strength, self.num_steps, self.device)
            if box is not None:  # the boxes' tokens alone read the identity frames' shared tokens
                ctx.readers = ctx.subject_masks
        return _PassState(frames=tuple(frames), batch=batch, cond=cond, cond_mask=cond_mask, added=added,
                          subject=subject, consistency=ctx, box=box)

    def _box_noise(self, model, model_in: torch.Tensor, timestep: torch.Tensor, state: _PassState,
                   step: int) -> torch.Tensor:
        """Training-free box control's prediction (:class:`~lay2story_core.consistency.box_control.BoxPlan`): a
        background call on the frames as they are, and one call per boxed character on the frames rolled so its
        boxes are centred (its tokens shared and kept apart in the bank under its id), composed box by box."""
        box, ctx = state.box, state.consistency
        negative = [self.negative] * (state.batch - len(state.frames))  # the unconditional half, if any
        timestep = timestep.expand(state.batch)
        # 1. background (B, C, h, w): each frame's caption without its boxed characters
        cond, cond_mask = self._texts(list(box.background) + negative)
        background_ctx = dataclasses.replace(ctx, regional=None, step=step)
        background = model(model_in, cond, timestep, state.added, cond_mask,
                           cross_attention_kwargs={"story_consistency": background_ctx}).sample
        # 2. per character: the frames rolled so its boxes are centred (B, C, h, w), predicted, rolled back
        predictions = []
        for region in box.regions:
            halves = state.batch // len(state.frames)
            tokens = region.tokens.repeat(halves, 1)  # (B, N)
            region_ctx = dataclasses.replace(ctx, regional=None, step=step, subject_masks=tokens, readers=tokens,
                                             bank_key=region.character)
            cond, cond_mask = self._texts(list(region.captions) + negative)
            out = model(region.window(model_in), cond, timestep, state.added, cond_mask,
                        cross_attention_kwargs={"story_consistency": region_ctx}).sample
            predictions.append(region.unroll(out))
        # 3. the background outside the boxes, each character inside its box
        return box.compose(background, predictions)

    def denoise(self, model: Lay2StoryTransformer, frames: list[int], latents: torch.Tensor, kind: str,
                pass_index: int, stop_after: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The pass's latents after every step; with ``stop_after=k``: ``(model input, timestep)`` of step ``k``
        after ``k`` steps (auto layout's draft)."""
        pipe = self.pipe
        # a. conditioning of this pass, once
        state = self.prepare_pass(frames, kind)
        batch, cond, cond_mask, added, subject, ctx = (state.batch, state.cond, state.cond_mask, state.added,
                                                       state.subject, state.consistency)
        # b. a fresh scheduler per pass (multistep solvers keep history), prepared as the initial noise was
        scheduler = pipe.prepared_scheduler(self.num_steps, self.device)
        # stochastic samplers (euler_a, ddpm) draw their step noise from the call's generator, as diffusers'
        # pipelines do: the seed decides the whole story, whatever else used the global RNG
        step_kwargs = {"generator": self.generator} if "generator" in inspect.signature(scheduler.step).parameters \
            else {}
        total = self.num_steps * self.num_passes
        for i, t in enumerate(scheduler.timesteps):
            if i == stop_after:
                return scheduler.scale_model_input(latents, t), t
            # c. one model call for both halves
            model_in = torch.cat([latents, latents]) if self.do_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            self.bank.step = i
            kwargs = None
            if ctx is not None:
                ctx.step = i
                kwargs = {"story_consistency": ctx}
            if state.box is not None and state.box.active(i):  # training-free box control: composed box by box
                noise = self._box_noise(model, model_in, t.to(self.device), state, i)
            else:
                noise = model(model_in, cond, t.expand(batch).to(self.device), added, cond_mask, subject=subject,
                              cross_attention_kwargs=kwargs).sample
            # d. learned sigma: keep the noise prediction; classifier-free guidance
            if noise.shape[1] == 2 * latents.shape[1]:
                noise = noise[:, : latents.shape[1]]
            if self.do_cfg:
                noise_cond, noise_uncond = noise.chunk(2)
                noise = noise_uncond + self.guidance_scale * (noise_cond - noise_uncond)
            latents = scheduler.step(noise.float(), t, latents.float(), **step_kwargs).prev_sample.to(self.dtype)
            # e. progress, previews, cancel; diffusers' callback_on_step_end and interrupt
            if self.callback is not None and self.callback(pass_index * self.num_steps + i + 1, total,
                                                           latents) is False:
                raise GenerationCancelled(f"cancelled at step {pass_index * self.num_steps + i + 1}/{total}")
            if self.step_end is not None:
                latents = self.step_end(pass_index * self.num_steps + i, t, latents, total)
        return latents


def _story_source(story: object) -> object:
    """A ``str`` that is not JSON text (does not start with ``{``) is the path of a story file."""
    if isinstance(story, str) and not story.lstrip().startswith("{"):
        return Path(story)
    if isinstance(story, os.PathLike) and not isinstance(story, Path):
        return Path(os.fspath(story))
    return story
