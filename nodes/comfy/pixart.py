"""Lay2Story on ComfyUI's own PixArt: :class:`ComfyPixArt` drives the modules of ComfyUI's ``PixArtMS`` (the
``diffusion_model`` of a ``MODEL`` from "Load Checkpoint" / "Load Diffusion Model", LoRAs applied by core nodes) with
the subject branch's residuals and the story attention, without copying a weight.

Why drive ComfyUI's modules instead of building our diffusers transformer over the same tensors (the spike, see
the issue note): ComfyUI keeps PixArt's fused ``qkv``/``kv_linear`` weights, may keep them in fp8 or on the CPU
(low-VRAM: ``comfy.ops`` casts each weight when its module runs, LoRA patches are applied as weight functions), and
moves them with ``ModelPatcher``; parameters shared into diffusers' split ``to_q/to_k/to_v`` would have to be views
of the fused ones and break at the first of those moves or casts. Calling ComfyUI's modules keeps every one of its
memory and patching mechanisms; only the block loop (to add the residuals) and the attention maths (masks, story
attention: the same core functions the diffusers host calls) are ours.

The loop mirrors ``PixArtMS.forward_orig`` (``comfy/ldm/pixart/pixartms.py``, ComfyUI 0.3.64) step by step. Two of
its conventions are kept or handled on purpose:

* the positional grid is recomputed from the current size, as ComfyUI does for every PixArt (at a size other than
  the model's native one this differs from original PixArt / diffusers, which keep the training grid): the native
  path gives what ComfyUI's own KSampler gives;
* at 256 px (32x32 latents) ComfyUI's formula divides by zero (``pe_interpolation = round(0.5) = 0``, ``base_size
  = 0``); there we use the grid of PixArt-alpha-256 (interpolation 0.5, base size = the token grid), which is what
  original PixArt and diffusers use for 256 px models.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lay2story_core.attention import TokenPacking
from lay2story_core.consistency import StoryConsistencyContext
from lay2story_core.consistency.processors import ConsistentSelfAttnProcessor, RegionalCrossAttnProcessor
from lay2story_core.models.lay2story_transformer import SubjectInputs, subject_branch_input

__all__ = ["ComfyPixArt", "check_pixart", "pixart_grid_settings"]


@dataclass
class _Output:
    sample: torch.Tensor


class _Config(dict):
    """A diffusers-like config (``cfg.patch_size`` and ``cfg.get("use_additional_conditions")``)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def check_pixart(diffusion_model: object, field: str = "model") -> nn.Module:
    """ComfyUI's ``PixArtMS`` (what its loaders build for PixArt-alpha/-Sigma), else ``ValueError`` naming
    ``field``. KV-compressed blocks (PixArt-Sigma 2K variants with ``sr_ratio > 1``) are refused too."""
    names = ("x_embedder", "t_embedder", "t_block", "y_embedder", "blocks", "final_layer", "unpatchify")
    if type(diffusion_model).__name__ != "PixArtMS" or not all(hasattr(diffusion_model, n) for n in names):
        raise ValueError(f"{field}: expected a PixArt-alpha/-Sigma MODEL (ComfyUI's PixArtMS), got "
                         f"{type(diffusion_model).__name__}")
    if any(getattr(b.attn, "sr_ratio", 1) > 1 for b in diffusion_model.blocks):
        raise ValueError(f"{field}: PixArt blocks with KV compression (sr_ratio > 1) are not supported")
    return diffusion_model


def pixart_grid_settings(latent_h: int, latent_w: int, patch_size: int, pe_interpolation=None,
                         pe_precision=None) -> tuple[float, int]:
    """``(pe_interpolation, base_size)`` of ComfyUI's PixArt at a latent size; the 256 px case fixed (module
    docstring)."""
    c_res = (latent_h + latent_w) // 2
    interpolation = pe_interpolation
    if interpolation is None or pe_precision is not None:
        interpolation = round(c_res / (512 / 8.0), pe_precision or 0)
    base_size = (round(c_res / 64) * 64) // patch_size
    if not interpolation or not base_size:  # ComfyUI: division by zero at 32x32 latents
        interpolation, base_size = c_res / 64.0, max(c_res // patch_size, 1)
    return float(interpolation), int(base_size)


# ----------------------------------------------------------------------------------------- attention adapters
class _FusedSelfAttention:
    """ComfyUI's ``AttentionKVCompress`` (fused ``qkv``) seen as diffusers' ``Attention`` (``to_q``/``to_k``/
    ``to_v``/``to_out``/``heads``) by the core story processors. The fused projection runs once per input."""

    residual_connection = False
    rescale_output_factor = 1.0

    def __init__(self, attn: nn.Module) -> None:
        self.attn = attn
        self.heads = attn.num_heads
        self.to_out = (attn.proj, nn.Identity())
        self._cache: tuple[torch.Tensor, tuple] | None = None

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._cache is None or self._cache[0] is not x:
            b, n, c = x.shape
            q, k, v = self.attn.qkv(x).reshape(b, n, 3, c).unbind(2)
            self._cache = (x, (self.attn.q_norm(q), self.attn.k_norm(k), v))
        return self._cache[1]

    def to_q(self, x):
        return self._qkv(x)[0]

    def to_k(self, x):
        return self._qkv(x)[1]

    def to_v(self, x):
        return self._qkv(x)[2]


class _FusedCrossAttention:
    """ComfyUI's ``MultiHeadCrossAttention`` (fused ``kv_linear``) seen as diffusers' ``Attention``."""

    residual_connection = False
    rescale_output_factor = 1.0

    def __init__(self, attn: nn.Module) -> None:
        self.attn = attn
        self.heads = attn.num_heads
        self.to_q = attn.q_linear
        self.to_out = (attn.proj, attn.proj_drop)
        self._cache: tuple[torch.Tensor, tuple] | None = None

    def _kv(self, y: torch.Tensor):
        if self._cache is None or self._cache[0] is not y:
            self._cache = (y, self.attn.kv_linear(y).view(*y.shape[:-1], 2, y.shape[-1]).unbind(-2))
        return self._cache[1]

    def to_k(self, y):
        return self._kv(y)[0]

    def to_v(self, y):
        return self._kv(y)[1]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)  # (B, H, N, d)


def _plain_self_attention(view: _FusedSelfAttention, hidden_states, *args, **kwargs) -> torch.Tensor:
    """ComfyUI's self-attention (``AttentionKVCompress.forward`` without compression): SDPA over all tokens."""
    b, n, c = hidden_states.shape
    q, k, v = (_heads(t, view.heads) for t in view._qkv(hidden_states))
    out = F.scaled_dot_product_attention(q, k, v)
    return view.attn.proj(out.transpose(1, 2).reshape(b, n, c))


def _plain_cross_attention(view: _FusedCrossAttention, hidden_states, encoder_hidden_states=None,
                           attention_mask=None, *args, **kwargs) -> torch.Tensor:
    """ComfyUI's cross-attention (``MultiHeadCrossAttention.forward``), with a padding mask ``(B, L)`` bool so a
    batch of captions of different lengths equals running each caption unpadded, as ComfyUI does."""
    b, n, c = hidden_states.shape
    q = _heads(view.to_q(hidden_states), view.heads)
    k, v = (_heads(t, view.heads) for t in view._kv(encoder_hidden_states))
    mask = None if attention_mask is None else attention_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return view.attn.proj_drop(view.attn.proj(out.transpose(1, 2).reshape(b, n, c)))


# ----------------------------------------------------------------------------------------------- the model
class ComfyPixArt:
    """ComfyUI's ``PixArtMS`` + an optional :class:`~lay2story_core.models.SubjectBranch`, called like
    :class:`~lay2story_core.models.Lay2StoryTransformer` (the pipeline's model interface).

    Args:
        diffusion_model: ``MODEL.model.diffusion_model`` after ``load_models_gpu`` (weights where ComfyUI put them).
        subject_branch: the trained branch (already on ``device``), or ``None``.
        dtype: the compute dtype (ComfyUI's ``manual_cast_dtype`` or the model dtype).
        device: where the model computes (the ``MODEL``'s load device).
    """

    def __init__(self, diffusion_model: nn.Module, subject_branch: nn.Module | None, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.dm = check_pixart(diffusion_model)
        self.subject_branch = subject_branch
        self.dtype, self.device = dtype, torch.device(device)
        self.inner_dim = int(self.dm.hidden_size)
        self.config = _Config(num_layers=len(self.dm.blocks), patch_size=int(self.dm.patch_size),
                              in_channels=int(self.dm.in_channels), out_channels=int(self.dm.out_channels),
                              use_additional_conditions=bool(getattr(self.dm, "micro_conditioning", False)),
                              num_attention_heads=int(self.dm.num_heads),
                              attention_head_dim=self.inner_dim // int(self.dm.num_heads))
        self._self_views = [_FusedSelfAttention(b.attn) for b in self.dm.blocks]
        self._cross_views = [_FusedCrossAttention(b.cross_attn) for b in self.dm.blocks]
        self._processors: list | None = None
        if subject_branch is not None:
            subject_branch.check_fits(self)

    @contextmanager
    def story_processors(self):
        """The training-free story processors (core maths) on every block while inside."""
        n = len(self.dm.blocks)
        self._processors = [(ConsistentSelfAttnProcessor(i, n, _plain_self_attention),
                             RegionalCrossAttnProcessor(_plain_cross_attention)) for i in range(n)]
        try:
            yield
        finally:
            self._processors = None
            self._clear_caches()

    def _clear_caches(self) -> None:
        for view in (*self._self_views, *self._cross_views):
            view._cache = None

    # -- pieces of PixArtMS.forward_orig ---------------------------------------------------------------------
    def caption_projection(self, embeds: torch.Tensor) -> torch.Tensor:
        """``(n, L, 4096)`` T5 states -> ``(n, L, D)`` (``y_embedder`` in eval: no caption dropout)."""
        return self.dm.y_embedder(embeds.to(device=self.device, dtype=self.dtype), False)

    def modulation(self, timestep: torch.Tensor, added: dict | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``t (B, D)`` (timestep + micro-conditions) and ``t0 (B, 6D)`` (``t_block``), as ComfyUI's PixArt."""
        timestep = timestep.to(self.device).float().reshape(-1).expand(batch) if timestep.numel() == 1 else (
            timestep.to(self.device).float())
        t = self.dm.t_embedder(timestep, self.dtype)
        if self.config.use_additional_conditions and added is not None:
            c_size = self.dm.csize_embedder(added["resolution"].to(self.device, self.dtype), batch)
            c_ar = self.dm.ar_embedder(added["aspect_ratio"].to(self.device, self.dtype), batch)
            t = t + torch.cat([c_size, c_ar], dim=1)
        return t, self.dm.t_block(t)

    def pos_grid(self, latent_h: int, latent_w: int, dtype: torch.dtype) -> torch.Tensor:
        """``(1, N, D)`` positional embedding, ComfyUI's function with ComfyUI's settings (256 px fixed)."""
        dm = self.dm
        interpolation, base_size = pixart_grid_settings(latent_h, latent_w, self.config.patch_size,
                                                        dm.pe_interpolation, dm.pe_precision)
        grid_fn = sys.modules[type(dm).__module__].get_2d_sincos_pos_embed_torch
        return grid_fn(self.inner_dim, h=latent_h // self.config.patch_size, w=latent_w // self.config.patch_size,
                       pe_interpolation=interpolation, base_size=base_size, device=self.device,
                       dtype=dtype).unsqueeze(0)

    def _block(self, index: int, x, y, y_mask, t0, ctx: StoryConsistencyContext | None):
        block = self.dm.blocks[index]
        b = x.shape[0]
        table = block.scale_shift_table[None].to(dtype=x.dtype, device=x.device) + t0.reshape(b, 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table.chunk(6, dim=1)
        # 1. self-attention (plain, or the story's consistent self-attention)
        h = block.norm1(x) * (1 + scale_msa) + shift_msa
        self_view, cross_view = self._self_views[index], self._cross_views[index]
        if self._processors is not None:
            attn = self._processors[index][0](self_view, h, story_consistency=ctx)
        else:
            attn = _plain_self_attention(self_view, h)
        self_view._cache = None
        x = x + gate_msa * attn
        # 2. cross-attention to the global caption (regional subject captions inside boxes)
        if self._processors is not None:
            x = x + self._processors[index][1](cross_view, x, y, y_mask, story_consistency=ctx)
        else:
            x = x + _plain_cross_attention(cross_view, x, y, y_mask)
        cross_view._cache = None
        # 3. feed-forward
        return x + gate_mlp * block.mlp(block.norm2(x) * (1 + scale_mlp) + shift_mlp)

    # -- the call --------------------------------------------------------------------------------------------
    def __call__(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: torch.Tensor,
                 added_cond_kwargs: dict | None = None, encoder_attention_mask: torch.Tensor | None = None,
                 subject: SubjectInputs | None = None, cross_attention_kwargs: dict | None = None) -> _Output:
        """Noise prediction (and learned variance) ``(B, out_channels, h, w)`` for ``hidden_states (B, 4, h, w)``;
        arguments as :meth:`Lay2StoryTransformer.forward`. ``timestep`` is PixArt's discrete timestep (0..999)."""
        dm = self.dm
        ctx = (cross_attention_kwargs or {}).get("story_consistency")
        latents = hidden_states.to(device=self.device, dtype=self.dtype)
        b, _, lat_h, lat_w = latents.shape
        # 1. patch embedding + ComfyUI's positional grid (B, N, D); modulation t (B, D), t0 (B, 6D)
        x = dm.x_embedder(latents) + self.pos_grid(lat_h, lat_w, latents.dtype)
        t, t0 = self.modulation(timestep, added_cond_kwargs, b)
        # 2. captions (B, L, D) and their padding mask (B, L)
        y = self.caption_projection(encoder_hidden_states)
        y_mask = None if encoder_attention_mask is None else encoder_attention_mask.to(self.device).bool()
        if y_mask is not None and bool(y_mask.all()):
            y_mask = None
        # 3. subject branch residuals (packed), before the blocks
        residuals = None
        if subject is not None and self.subject_branch is not None:
            residuals = self._subject_residuals(latents, t0, added_cond_kwargs, subject)
        # 4. blocks, subject block k's residual after global block 2k+1
        for index in range(len(dm.blocks)):
            x = self._block(index, x, y, y_mask, t0, ctx)
            if residuals is not None:
                x = residuals.add_to(x, index)
        self._clear_caches()
        # 5. final layer and unpatchify (B, out_channels, h, w)
        x = dm.final_layer(x, t)
        return _Output(sample=dm.unpatchify(x, lat_h, lat_w))

    def run_subject_branch(self, hidden_states: torch.Tensor, timestep: torch.Tensor, subject: SubjectInputs,
                           added_cond_kwargs: dict | None = None):
        """The subject branch alone (the global blocks do not run), as :meth:`Lay2StoryTransformer.
        run_subject_branch`: what a write pass of these frames stores in ``subject.bank`` (a redo's kept frames)."""
        latents = hidden_states.to(device=self.device, dtype=self.dtype)
        t0 = self.modulation(timestep, added_cond_kwargs, latents.shape[0])[1]
        return self._subject_residuals(latents, t0, added_cond_kwargs, subject)

    def _subject_residuals(self, latents, t0, added, subject: SubjectInputs):
        branch = self.subject_branch
        bdtype = branch.dtype
        subject_input, ref_t, ref_cond = subject_branch_input(latents, subject, added)
        temb = t0
        if ref_t is not None:  # clean references: timestep 0, the frames' micro-conditions
            temb = torch.cat([t0, self.modulation(ref_t, ref_cond, ref_t.shape[0])[1]], dim=0)
        caption = subject.caption_states
        if caption is None:
            caption = self.caption_projection(subject.caption_embeds)
        valid = None if subject.caption_mask is None else subject.caption_mask.bool()
        packing = subject.packing or TokenPacking.build(subject.slots, subject_input.shape[0])
        return branch(subject_input.to(bdtype), temb.to(bdtype), caption.to(bdtype), valid, packing,
                      caption_index=subject.caption_index, bank=subject.bank, subject_scale=subject.scale)
