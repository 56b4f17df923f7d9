"""The story adapter of ComfyUI's ``PixArtMS`` (PixArt-alpha / -Sigma): training-free and Lay2Story under ComfyUI's
own samplers (KSampler, KSamplerAdvanced, SamplerCustomAdvanced).

ComfyUI's PixArt has no attention patches, so :func:`apply` object-patches ``diffusion_model.forward`` on the
``MODEL`` clone (``add_object_patch``: an instance attribute that ``nn.Module.__call__`` uses while ComfyUI has the
clone loaded; ComfyUI's classes are untouched). :class:`PixArtStoryForward` maps each of ComfyUI's calls
(``x (B, 4, h, w)`` already scaled, PixArt's timestep, ``context (B, L, 4096)`` T5 states, ``c_size``/``c_ar``,
``transformer_options`` with ``cond_or_uncond``, ``sigmas``, ``sample_sigmas``) onto a :class:`~.pixart.ComfyPixArt`
call over the SAME diffusion model (LoRA weights, low-VRAM casting and model management as ComfyUI set them), the
model ``L2S_StorySampler`` samples through :class:`~.pipeline.ComfyStoryPipeline`, and returns what
``PixArtMS.forward`` returns (learned sigma dropped):

* rows are put conditional chunks first (ComfyUI batches ``cond_or_uncond=[1, 0]``; the pipeline's calls are
  conditional half first), so the regional captions, the subject slots and even the random token samples of the
  conditional chunk are the pipeline's; the output goes back in ComfyUI's order;
* ``training_free``: inside ``ComfyPixArt.story_processors()`` with the context of
  :meth:`~.story_patch.StoryPatch.context` (plus the pipeline's regional subject captions);
* ``lay2story``: the subject branch's residuals on the conditional rows (``StoryPatch.cond_rows``), with the inputs
  the pipeline builds: the slot plan, packing, projected captions and per-slot scales come from the pipeline's own
  ``_Job.pass_subject_inputs`` (and the regional captions from ``_Job._consistency_context``), built once per
  sampling run and batch layout ``(rows, cond_or_uncond, token grid)``, not per call.

A call that shares nothing and routes nothing (mode ``none``, rate 0 or a step before ``start_step`` without regional
captions, subject scale 0, a call without conditional rows in ``lay2story``) runs ``PixArtMS.forward`` itself, bit for
bit. ``ComfyPixArt``'s block loop is not bit-identical to it on the CPU: ComfyUI's ``optimized_attention`` there is
``attention_sub_quad``, ``ComfyPixArt`` calls ``scaled_dot_product_attention`` (same maths, ~1e-6 apart; with
ComfyUI's attention function the loop is bit-identical).

``patch.extra`` (what :func:`pixart_patch_extra` fills from a ``CLIP``, a ``VAE`` and the branch):

* ``"mode"``: ``"lay2story"`` | ``"training_free"`` | ``"none"`` (default: ``lay2story`` with a branch, else
  ``training_free``);
* ``"subject_branch"``: the :class:`~lay2story_core.models.SubjectBranch` (``nn.Module``) or ``None``;
  ``"branch_patcher"``: its ``ModelPatcher`` (``host.managed``), loaded by ComfyUI with the ``MODEL``;
* ``"caption_embeds"``: ``{text: (L, 4096)}`` unpadded T5 states of every caption a pass plans: in ``lay2story``
  mode each resolved subject's caption (its own, else its frame's global caption) and, with references,
  ``REFERENCE_CAPTION`` (``""``); in ``training_free`` mode each captioned box's region caption and the frames' global
  captions;
  ``StoryPatch.caption_conds`` (``{text: (1, L, C)}``) are read too;
* ``"reference_latents"``: ``{character_id: (4, h, w)}`` scaled latents (``latent_format.process_in``) at the
  frames' latent size; ``"reference_boxes"``: ``{character_id: Box | None}`` (the character's box in it);
* ``"subject_scale"``: a number or ``{character_id: number}``; ``"subject_captions"``: bool (default ``True``);
  ``"attention_3d"``: bool (default ``True``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import comfy.patcher_extension
import torch
from torch import nn

from lay2story_core.attention.backends import BackendChooser
from lay2story_core.conditioning import REFERENCE_CAPTION
from lay2story_core.consistency import region_captions
from lay2story_core.models import IdentityBank
from lay2story_core.pipelines.modes import Mode, resolve_mode
from lay2story_core.pipelines.story_pipeline import ReferenceImage, _Job, check_subject_scale

from . import host
from .pixart import ComfyPixArt, check_pixart
from .story_patch import PATCH_KEY, StoryPatch, diffusion_model_of

logger = logging.getLogger(__name__)

__all__ = ["PixArtStoryForward", "apply", "pixart_patch_extra"]

FORWARD = "diffusion_model.forward"  # the object patch's name
KEY = f"{PATCH_KEY}_pixart"  # this adapter's wrapper and additional-models key


@dataclass(frozen=True)
class _StoryInputs:
    """A patch's checked inputs (what every layout of every run builds from)."""

    resolved: tuple
    texts: Mapping[str, torch.Tensor]  # (L, C) unpadded
    reference_latents: Mapping[str, torch.Tensor]  # (4, h, w)
    reference_boxes: Mapping[str, object]
    branch: nn.Module | None
    subject_scale: float | Mapping[str, float]
    attention_3d: bool
    regional: bool  # training-free regional subject captions in this story

    def padded_texts(self, device, dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{text: (embeds (L, C), mask (L,))}`` zero-padded to the longest, as the pipeline's ``_Job.text``."""
        if not self.texts:
            return {}
        length = max(t.shape[0] for t in self.texts.values())
        out = {}
        for text, states in self.texts.items():
            embeds = states.new_zeros(length, states.shape[-1])
            embeds[: states.shape[0]] = states
            mask = torch.zeros(length, dtype=torch.long)
            mask[: states.shape[0]] = 1
            out[text] = (embeds.to(device=device, dtype=dtype), mask.to(device))
        return out


@dataclass(frozen=True)
class _Layout:
    """What every call of one batch layout shares in a sampling run."""

    order: torch.Tensor | None  # rows with the conditional chunks first (None: already so)
    inverse: torch.Tensor | None
    model: ComfyPixArt
    subject: object | None  # SubjectInputs of the conditional rows (lay2story)
    regional: tuple | None  # (packing, projected captions, valid) of the conditional rows (training-free)


class _PassHost:
    """The part of a ``StoryPipeline`` that its ``_Job`` reads to build a pass, over ComfyUI's PixArt (sizes in
    latent pixels: ``vae_scale_factor`` 1)."""

    vae_scale_factor = 1

    def __init__(self, model: ComfyPixArt, chooser: BackendChooser | None) -> None:
        self.model, self.chooser = model, chooser
        self.patch_size = model.config.patch_size

    def project_captions(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.model.caption_projection(embeds)

    def attention_settings(self, joint: bool = True) -> dict:
        return {"backend": "auto", "chooser": self.chooser} if joint else {"backend": "padded"}


@dataclass(eq=False)
class PixArtStoryForward:
    """The object patch of ``diffusion_model.forward``: called as ComfyUI calls ``PixArtMS`` (module docstring)."""

    dm: nn.Module
    patch: StoryPatch
    mode: Mode
    inputs: _StoryInputs
    _layouts: dict = field(default_factory=dict, repr=False)
    _chooser: BackendChooser | None = field(default=None, repr=False)

    def original(self, *args, **kwargs) -> torch.Tensor:
        """``PixArtMS.forward`` itself (what ComfyUI runs without this patch)."""
        return type(self.dm).forward(self.dm, *args, **kwargs)

    def outer_sample(self, executor, *args, **kwargs):
        """``OUTER_SAMPLE`` wrapper: the layouts live for one sampling run (weights may change between runs)."""
        self._layouts.clear()
        try:
            return executor(*args, **kwargs)
        finally:
            self._layouts.clear()

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, c_size=None, c_ar=None,
                 **kwargs) -> torch.Tensor:
        if self.mode.name == "none":
            return self.original(x, timesteps, context, c_size=c_size, c_ar=c_ar, **kwargs)
        opts = kwargs.get("transformer_options") or {}
        rows, patch_size = x.shape[0], int(self.dm.patch_size)
        grid = (x.shape[-2] // patch_size, x.shape[-1] // patch_size)
        layout = self._layout(opts, rows, grid, x)
        ctx = None
        if self.mode.consistency:
            ctx = self.patch.context(opts, rows, grid, x.device)
            routes = layout.regional is not None and ctx.config.regional_captions
            if not routes and not self._shares(ctx):
                return self.original(x, timesteps, context, c_size=c_size, c_ar=c_ar, **kwargs)
            if layout.regional is not None:
                ctx = dataclasses.replace(ctx, regional=layout.regional)
        elif layout.subject is None or _is_zero(self.inputs.subject_scale):
            return self.original(x, timesteps, context, c_size=c_size, c_ar=c_ar, **kwargs)
        return self._story_call(layout, x, timesteps, context, c_size, c_ar, ctx)

    # -- one call ------------------------------------------------------------------------------------------------
    def _shares(self, ctx) -> bool:
        n = len(self.dm.blocks)
        return ctx.config.rate > 0 and any(ctx.uses_consistency(i, n) for i in range(n))

    def _story_call(self, layout: _Layout, x, timesteps, context, c_size, c_ar, ctx) -> torch.Tensor:
        dm, rows = self.dm, x.shape[0]
        _, _, h, w = x.shape
        if dm.micro_conditioning:  # PixArtMS.forward's fallback for missing micro-conditions
            if c_size is None:
                c_size = torch.tensor([h * 8, w * 8], dtype=x.dtype, device=x.device).repeat(rows, 1)
            if c_ar is None:
                c_ar = torch.tensor([h / w], dtype=x.dtype, device=x.device).repeat(rows, 1)

        def ordered(t: torch.Tensor) -> torch.Tensor:  # (rows, ...) with the conditional chunks first
            if t.shape[0] != rows:  # one row for all (ComfyUI repeats conds to the batch; a direct call may not)
                t = t[:1].expand(rows, *t.shape[1:])
            return t if layout.order is None else t[layout.order]

        added = None
        if dm.micro_conditioning:
            added = {"resolution": ordered(c_size.reshape(-1, 2)), "aspect_ratio": ordered(c_ar.reshape(-1, 1))}
        args = (ordered(x), ordered(context), ordered(timesteps.reshape(-1)), added, None)
        model = layout.model
        if ctx is not None:
            with model.story_processors():
                out = model(*args, cross_attention_kwargs={"story_consistency": ctx}).sample
        else:
            out = model(*args, subject=layout.subject).sample
        if dm.pred_sigma:  # PixArtMS.forward returns the noise prediction only
            out = out[:, : dm.in_channels]
        return out if layout.inverse is None else out[layout.inverse]

    # -- per layout (once per sampling run) -----------------------------------------------------------------------
    def _layout(self, opts: dict, rows: int, grid: tuple[int, int], x: torch.Tensor) -> _Layout:
        key = (rows, tuple(opts.get("cond_or_uncond") or (0,)), grid, str(x.device), x.dtype)
        layout = self._layouts.get(key)
        if layout is None:
            self.patch.batch.chunks_of(rows, "latent_image")
            layout = self._layouts[key] = self._build_layout(opts, rows, tuple(x.shape[-2:]), x.device, x.dtype)
        return layout

    def _build_layout(self, opts: dict, rows: int, latent_size: tuple[int, int], device, dtype) -> _Layout:
        cond = self.patch.cond_rows(opts, rows)
        taken = set(cond)
        permutation = cond + [r for r in range(rows) if r not in taken]
        order = inverse = None
        if permutation != list(range(rows)):
            order = torch.tensor(permutation, device=device)
            inverse = torch.argsort(order)
        model = ComfyPixArt(self.dm, self.inputs.branch if self.mode.subject_branch else None, dtype,
                            torch.device(device))
        subject = regional = None
        if cond and (self.mode.subject_branch or self.inputs.regional):
            job = self._job(model, latent_size, device, dtype)
            frames = list(range(self.patch.num_frames)) * (len(cond) // self.patch.num_frames)
            plan, subject = job.pass_subject_inputs(frames, rows, "joint")
            if self.mode.consistency:
                regional = job._consistency_context(frames, rows, plan, "joint").regional
        return _Layout(order, inverse, model, subject, regional)

    def _job(self, model: ComfyPixArt, latent_size: tuple[int, int], device, dtype) -> _Job:
        """The pipeline's per-call job over this story, its conditioning and ComfyUI's PixArt."""
        inputs = self.inputs
        ref_latents = {}
        for char_id, latent in inputs.reference_latents.items():
            if tuple(latent.shape[-2:]) != latent_size:
                raise ValueError(f"latent_image: {latent_size[0]}x{latent_size[1]} latents, but the reference of "
                                 f"{char_id!r} was encoded for {latent.shape[-2]}x{latent.shape[-1]} latents: use "
                                 f"the story's size (Lay2Story Empty Story Latent) or rebuild the story patch")
            ref_latents[char_id] = latent.to(device=device, dtype=dtype)
        if self._chooser is None and torch.device(device).type == "cuda":
            heads = int(self.dm.num_heads)
            self._chooser = BackendChooser(heads=heads, head_dim=int(self.dm.hidden_size) // heads, dtype=dtype)
        story = self.patch.batch.story
        return _Job(pipe=_PassHost(model, self._chooser), story=story, resolved=list(inputs.resolved),
                    text=inputs.padded_texts(device, dtype), negative="",
                    refs={c: ReferenceImage(None, inputs.reference_boxes.get(c)) for c in ref_latents},
                    ref_latents=ref_latents, mode=self.mode, do_cfg=False, guidance_scale=1.0, num_steps=1,
                    height=latent_size[0], width=latent_size[1], device=torch.device(device), dtype=dtype,
                    consistency=self.patch.batch.config, bank=IdentityBank(), training_free_bank={}, callback=None,
                    num_passes=1, subject_scale=inputs.subject_scale, attention_3d=inputs.attention_3d)


def _is_zero(scale) -> bool:
    return not isinstance(scale, Mapping) and float(scale) == 0.0


def _needed_texts(story, resolved, mode: Mode, regional: bool, references: bool) -> list[str]:
    """The captions a pass plans: the subject branch's (every resolved subject's, and the references' slot caption);
    training-free regional cross-attention's (each captioned box's region caption, the frames' global captions for
    the other slots)."""
    texts = []
    if mode.subject_branch:
        texts += [s.caption for frame in resolved for s in frame] + ([REFERENCE_CAPTION] if references else [])
    if regional:
        texts += region_captions(story, resolved) + [story.global_caption(f) for f in range(len(resolved))]
    return list(dict.fromkeys(texts))


def _story_inputs(patch: StoryPatch, dm: nn.Module) -> tuple[Mode, _StoryInputs]:
    """``patch.extra`` checked against the model and the story; ``ValueError`` naming the node input."""
    extra, story, config = patch.extra, patch.batch.story, patch.batch.config
    branch = extra.get("subject_branch")
    if branch is not None and not isinstance(branch, nn.Module):
        raise ValueError(f"subject_branch: expected a Lay2Story subject branch, got {type(branch).__name__}")
    mode = resolve_mode(extra.get("mode"), branch is not None)
    if mode.consistency:
        config.active_blocks(len(dm.blocks))  # out-of-range blocks: ValueError naming the blocks input
        if config.box_strength > 0:
            raise ValueError(f"box_strength: training-free box control ({config.box_strength}) is not available "
                             f"under KSampler on PixArt; use 0 or Lay2Story Story Sampler")
    if mode.subject_branch:
        ComfyPixArt(dm, branch, torch.float32, torch.device("cpu"))  # the branch fits: ValueError naming it
    scale = extra.get("subject_scale", 1.0)
    check_subject_scale(scale, story)
    uses_layout = mode.uses_layout
    captions = bool(extra.get("subject_captions", True))
    resolved = tuple(story.resolve_frame(i, boxes=patch.batch.boxes and uses_layout, captions=captions and uses_layout)
                     for i in range(story.num_frames))
    regional = (mode.consistency and config.regional_captions
                and any(s.has_caption for frame in resolved for s in frame))
    latents = dict(extra.get("reference_latents") or {}) if mode.references else {}
    for char_id, latent in latents.items():
        story.character(char_id)  # LayoutError for an unknown character
        latent = latent[0] if latent.dim() == 4 else latent
        if latent.dim() != 3 or latent.shape[0] != dm.in_channels:
            raise ValueError(f"vae: the reference of {char_id!r} has latent shape {tuple(latent.shape)}, expected "
                             f"({dm.in_channels}, h, w) (a VAE of another model?)")
        latents[char_id] = latent
    texts = {t: c[0] if c.dim() == 3 else c for t, c in (patch.caption_conds or {}).items()}
    texts.update(extra.get("caption_embeds") or {})
    width = int(dm.y_embedder.y_proj.fc1.weight.shape[1])
    needed = _needed_texts(story, resolved, mode, regional, bool(latents))
    for text in needed:
        if text not in texts:
            raise ValueError(f"clip: no encoded caption for {text!r} in the story patch (build it with "
                             f"pixart_patch_extra and the story's CLIP)")
        if texts[text].shape[-1] != width:
            raise ValueError(f"clip: the caption {text!r} was encoded to width {texts[text].shape[-1]}, but this "
                             f"PixArt takes {width} (conditioning from another CLIP?)")
    inputs = _StoryInputs(resolved=resolved, texts={t: texts[t] for t in needed}, reference_latents=latents,
                          reference_boxes=dict(extra.get("reference_boxes") or {}),
                          branch=branch if mode.subject_branch else None, subject_scale=scale,
                          attention_3d=bool(extra.get("attention_3d", True)), regional=bool(regional))
    return mode, inputs


def apply(clone, patch: StoryPatch) -> None:
    """Patch a ``ModelPatcher`` clone of a PixArt ``MODEL`` in place; ``ValueError`` (naming the node input) before
    anything is patched when the story's inputs do not fit this model."""
    dm = check_pixart(diffusion_model_of(clone), "model")
    previous = clone.object_patches.get(FORWARD)
    if previous is not None and not isinstance(previous, PixArtStoryForward):
        raise ValueError("model: its PixArt forward is already replaced by another node's object patch; apply "
                         "Lay2Story Apply Story to the MODEL before that node")
    mode, inputs = _story_inputs(patch, dm)
    forward = PixArtStoryForward(dm, patch, mode, inputs)
    # nothing above patched anything; from here on the clone is patched
    clone.add_object_patch(FORWARD, forward)
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    clone.remove_wrappers_with_key(outer, KEY)
    clone.add_wrapper_with_key(outer, KEY, forward.outer_sample)
    patcher = patch.extra.get("branch_patcher")
    clone.remove_additional_models(KEY)
    if mode.subject_branch and patcher is not None:
        clone.set_additional_models(KEY, [patcher])  # ComfyUI loads and offloads the branch with the MODEL
    logger.info("Lay2Story PixArt: %s story of %d frames (%s)", mode.name, patch.num_frames,
                "regional captions" if inputs.regional else "no regional captions")


def pixart_patch_extra(model, story, *, clip=None, vae=None, references=None, subject_branch=None, mode=None,
                       subject_scale=1.0, subject_captions: bool = True, height: int | None = None,
                       width: int | None = None) -> dict:
    """``patch.extra`` for a PixArt ``MODEL`` (module docstring): the captions a pass plans through ``clip`` (as
    ``host.encode_texts``, each text on its own), the characters' references (the story's own, or ``references``:
    ``{character_id: image | ReferenceImage}``) through ``vae`` as ``ComfyStoryPipeline.encode_references`` at
    ``height x width`` (default: the story's size), and the subject branch (a module, or a bundle with ``branch``
    and ``patcher``). Tensors are kept on the CPU in the model's compute dtype."""
    from .pipeline import ComfyStoryPipeline

    check_pixart(diffusion_model_of(model), "model")
    branch, patcher = subject_branch, None
    if subject_branch is not None and hasattr(subject_branch, "branch"):  # the loader's SubjectBranchBundle
        branch, patcher = subject_branch.branch, getattr(subject_branch, "patcher", None)
    run_mode = resolve_mode(mode, branch is not None)
    extra = {"mode": run_mode.name, "subject_scale": subject_scale, "subject_captions": bool(subject_captions)}
    if run_mode.name == "none":
        return extra
    cpu, dtype = torch.device("cpu"), host.compute_dtype(model)
    resolved = [story.resolve_frame(i, captions=subject_captions) for i in range(story.num_frames)]
    latents = {}
    if run_mode.references:
        has_refs = bool(references) or bool(story.reference_images) or any(
            c.reference is not None for c in story.characters)
        if has_refs:
            if vae is None:
                raise ValueError("vae: the story's characters have reference images; connect the VAE to encode them")
            pipe = ComfyStoryPipeline(model, clip, vae, None, subject_branch=branch)
            refs = pipe._story_references(story, references)
            latents = pipe.encode_references(story, refs, height or story.height, width or story.width, cpu)
            extra["reference_boxes"] = {c: refs[c].box for c in latents}
    regional = run_mode.consistency and any(s.has_caption for frame in resolved for s in frame)
    texts = _needed_texts(story, resolved, run_mode, regional, bool(latents))
    if texts:
        embeds, mask = host.encode_texts(host.check_clip(clip), texts, cpu, dtype)
        extra["caption_embeds"] = {t: embeds[i, : int(mask[i].sum())] for i, t in enumerate(texts)}
    extra["reference_latents"] = latents
    if run_mode.subject_branch:
        extra["subject_branch"] = branch
        extra["branch_patcher"] = patcher if patcher is not None else host.managed(branch, model.load_device)
    return extra
