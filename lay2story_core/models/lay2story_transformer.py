"""The dual-branch Lay2Story transformer: a diffusers ``PixArtTransformer2DModel`` (global branch, untouched) plus a
:class:`SubjectBranch` whose block ``k`` is added after global block ``2k+1``.

The forward mirrors ``PixArtTransformer2DModel.forward`` (diffusers 0.42, ``models/transformers/
pixart_transformer_2d.py``): patch embedding, AdaLN-single, caption projection, blocks, final layer, unpatchify. With
the branch's zero-initialised outputs (or no subject inputs) the output equals plain PixArt exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from diffusers import PixArtTransformer2DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from ..attention import SubjectSlots, TokenPacking
from .packed_attention import IdentityBank
from .subject_branch import SubjectBranch


@dataclass
class SubjectInputs:
    """What the subject branch needs for one model call (a batch of story frames, CFG halves included).

    Images of the subject branch are the ``B`` frames of the batch followed by ``R`` reference images.

    Attributes:
        slots: subject slots over the ``B + R`` images (token masks, image of each slot, 3D group of each slot: one
            group per story x character x CFG half).
        caption_embeds: ``(U, L, C)`` text-encoder states of the subject captions (before the caption projection;
            the global branch's projection is shared): one per slot, or distinct ones picked by ``caption_index``.
        caption_mask: ``(U, L)`` text padding mask (1 = token).
        caption_index: ``(S,)`` the caption of each slot (``None``: ``caption_embeds`` has one per slot). Distinct
            captions are projected once.
        reference_latents: ``(B, 4, h, w)`` each frame's reference latent (zeros when it has none).
        reference_masks: ``(B, 1, h, w)`` each frame's reference mask (zeros when it has none).
        reference_images: ``(R, 4, h, w)`` clean reference latents whose subject tokens join the 3D attention.
        reference_image_masks: ``(R, 1, h, w)`` their masks.
        bank: identity key/value bank for StoryDiffusion's write/read scheme (long stories), or ``None``.
        scale: subject scale (layout strength): a number, or ``(S,)`` one per slot (per character).
        packing: the slots' :class:`TokenPacking` over the ``B + R`` images, when the caller built it once for a
            whole denoising pass (``None``: built per call).
        caption_states: ``caption_embeds`` already through the global caption projection (once per pass), or
            ``None``.
    """

    slots: SubjectSlots
    caption_embeds: torch.Tensor
    caption_mask: torch.Tensor | None = None
    caption_index: torch.Tensor | None = None
    reference_latents: torch.Tensor | None = None
    reference_masks: torch.Tensor | None = None
    reference_images: torch.Tensor | None = None
    reference_image_masks: torch.Tensor | None = None
    bank: IdentityBank | None = None
    scale: float | torch.Tensor = 1.0
    packing: TokenPacking | None = None
    caption_states: torch.Tensor | None = None


class Lay2StoryTransformer(nn.Module):
    """Global branch + subject branch. Saved as two diffusers folders: ``transformer/`` and ``subject_branch/``."""

    def __init__(self, transformer: PixArtTransformer2DModel, subject_branch: SubjectBranch | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        self.subject_branch = subject_branch
        if subject_branch is not None:
            subject_branch.check_fits(transformer)

    # -- diffusers-like conveniences -------------------------------------------------------------------------------
    @property
    def config(self):
        return self.transformer.config

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()
        if self.subject_branch is not None:
            self.subject_branch.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.transformer.disable_gradient_checkpointing()
        if self.subject_branch is not None:
            self.subject_branch.disable_gradient_checkpointing()

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        self.transformer.save_pretrained(os.path.join(save_directory, "transformer"), **kwargs)
        if self.subject_branch is not None:
            self.subject_branch.save_pretrained(os.path.join(save_directory, "subject_branch"), **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> Lay2StoryTransformer:
        transformer = PixArtTransformer2DModel.from_pretrained(os.path.join(directory, "transformer"), **kwargs)
        branch_dir = os.path.join(directory, "subject_branch")
        branch = SubjectBranch.from_pretrained(branch_dir, **kwargs) if os.path.isdir(branch_dir) else None
        return cls(transformer, branch)

    # -- forward ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        subject: SubjectInputs | None = None,
        cross_attention_kwargs: dict | None = None,
        return_dict: bool = True,
    ):
        """Predict noise (and learned variance) for a batch of frames.

        Args:
            hidden_states: ``(B, C, H, W)`` noisy latents, one batch element per frame (both CFG halves).
            encoder_hidden_states: ``(B, L, C_text)`` global captions (identity + frame prompt).
            timestep: ``(B,)`` or scalar diffusion timesteps.
            added_cond_kwargs: PixArt's ``resolution``/``aspect_ratio`` for 1024-MS models.
            encoder_attention_mask: ``(B, L)`` global caption padding mask.
            subject: subject-branch inputs, or ``None`` for the global branch alone (layout and subject off).
            cross_attention_kwargs: passed to the global branch's attention processors (training-free consistency).
        """
        pixart = self.transformer
        if pixart.use_additional_conditions and added_cond_kwargs is None:
            raise ValueError("added_cond_kwargs: required (resolution, aspect_ratio) by this 1024-MS model")
        if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
            encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
            encoder_attention_mask = encoder_attention_mask.unsqueeze(1)

        # 1. Input: patch embedding (B, N, D), AdaLN-single (B, 6D), caption projection (B, L, D)
        batch_size = hidden_states.shape[0]
        patch = pixart.config.patch_size
        height, width = hidden_states.shape[-2] // patch, hidden_states.shape[-1] // patch
        latents = hidden_states
        hidden_states = pixart.pos_embed(hidden_states)
        timestep_emb, embedded_timestep = pixart.adaln_single(
            timestep, added_cond_kwargs, batch_size=batch_size, hidden_dtype=hidden_states.dtype
        )
        encoder_hidden_states = pixart.caption_projection(encoder_hidden_states)
        encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.shape[-1])

        # 2. Subject branch: every block's residual (packed (T, D)), computed before the global blocks (the branch
        #    reads only its own inputs)
        residuals = None
        if subject is not None and self.subject_branch is not None:
            residuals = self._subject_residuals(latents, timestep, added_cond_kwargs, timestep_emb, subject)

        # 3. Blocks, subject block k's residual added after global block 2k+1
        for index, block in enumerate(pixart.transformer_blocks):
            if torch.is_grad_enabled() and pixart.gradient_checkpointing:
                hidden_states = pixart._gradient_checkpointing_func(
                    block, hidden_states, None, encoder_hidden_states, encoder_attention_mask, timestep_emb,
                    cross_attention_kwargs, None,
                )
            else:
                hidden_states = block(
                    hidden_states,
                    attention_mask=None,
                    encoder_hidden_states=encoder_hidden_states,
                    encoder_attention_mask=encoder_attention_mask,
                    timestep=timestep_emb,
                    cross_attention_kwargs=cross_attention_kwargs,
                    class_labels=None,
                )
            if residuals is not None:
                hidden_states = residuals.add_to(hidden_states, index)

        # 4. Output: final modulation, projection, unpatchify (as PixArtTransformer2DModel)
        shift, scale = (pixart.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        hidden_states = pixart.norm_out(hidden_states)
        hidden_states = hidden_states * (1 + scale) + shift
        hidden_states = pixart.proj_out(hidden_states)
        hidden_states = hidden_states.squeeze(1)
        hidden_states = hidden_states.reshape(shape=(-1, height, width, patch, patch, pixart.out_channels))
        hidden_states = torch.einsum("nhwpqc->nchpwq", hidden_states)
        output = hidden_states.reshape(shape=(-1, pixart.out_channels, height * patch, width * patch))
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def run_subject_branch(self, hidden_states: torch.Tensor, timestep: torch.Tensor, subject: SubjectInputs,
                           added_cond_kwargs: dict[str, torch.Tensor] | None = None):
        """The subject branch alone on ``(B, C, H, W)`` latents (the global blocks do not run): what a write pass
        of these frames stores in ``subject.bank``, at the cost of the branch (the kept frames of a redo,
        :mod:`lay2story_core.pipelines.redo`). Returns the branch's output."""
        timestep_emb = self.transformer.adaln_single(timestep, added_cond_kwargs, batch_size=hidden_states.shape[0],
                                                     hidden_dtype=hidden_states.dtype)[0]
        return self._subject_residuals(hidden_states, timestep, added_cond_kwargs, timestep_emb, subject)

    def _subject_residuals(self, latents, timestep, added_cond_kwargs, timestep_emb, subject: SubjectInputs):
        pixart = self.transformer
        dtype = latents.dtype
        subject_input, ref_t, ref_cond = subject_branch_input(latents, subject, added_cond_kwargs)
        temb = timestep_emb
        if ref_t is not None:  # references are clean latents: timestep 0, the frames' micro-conditions
            ref_temb = pixart.adaln_single(ref_t, ref_cond, batch_size=ref_t.shape[0], hidden_dtype=dtype)[0]
            temb = torch.cat([timestep_emb, ref_temb], dim=0)  # (B + R, 6D)
        packing = subject.packing or TokenPacking.build(subject.slots, subject_input.shape[0])
        caption = subject.caption_states
        if caption is None:  # (U, L, D), distinct captions once
            caption = pixart.caption_projection(subject.caption_embeds.to(dtype))
        caption_valid = None if subject.caption_mask is None else subject.caption_mask.bool()
        return self.subject_branch(subject_input, temb, caption.to(dtype), caption_valid, packing,
                                   caption_index=subject.caption_index, bank=subject.bank,
                                   subject_scale=subject.scale)


def subject_branch_input(latents: torch.Tensor, subject: SubjectInputs, added_cond_kwargs: dict | None = None):
    """The subject branch's ``(B + R, 9, h, w)`` input for noisy frames ``latents (B, 4, h, w)``: each frame's
    (reference latent, reference mask, noisy latent), then each clean reference image (latent, mask, latent).

    Also returns the references' timesteps ``(R,)`` (zeros; ``None`` without references) and their
    micro-conditions (the frames' first, or ``None``). Shared by every host's model.
    """
    batch, channels, h, w = latents.shape
    dtype = latents.dtype
    ref_lat = subject.reference_latents if subject.reference_latents is not None else latents.new_zeros(
        batch, channels, h, w)
    ref_mask = subject.reference_masks if subject.reference_masks is not None else latents.new_zeros(
        batch, 1, h, w)
    inputs = [torch.cat([ref_lat.to(dtype), ref_mask.to(dtype), latents], dim=1)]
    ref_t = ref_cond = None
    if subject.reference_images is not None and subject.reference_images.shape[0] > 0:
        refs = subject.reference_images.to(dtype)
        num_refs = refs.shape[0]
        inputs.append(torch.cat([refs, subject.reference_image_masks.to(dtype), refs], dim=1))
        ref_t = torch.zeros(num_refs, dtype=torch.long, device=latents.device)
        if added_cond_kwargs is not None:
            ref_cond = {k: v[:1].expand(num_refs, *v.shape[1:]) for k, v in added_cond_kwargs.items()}
    return torch.cat(inputs, dim=0), ref_t, ref_cond
