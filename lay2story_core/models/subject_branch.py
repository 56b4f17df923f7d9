"""The Lay2Story subject branch: a ControlNet-style, token-sparse companion of the PixArt-alpha global branch.

Architecture from Lay2Story (arXiv 2508.08949, Sec. 4 and Fig. 4): the branch reads
``concat(reference VAE latent (4), reference mask (1), noisy latent (4))`` through a conv back to 4 channels and its
own patch embedding; each of its blocks does masked self-attention (within a subject), masked cross-attention (to the
subject caption) and masked 3D self-attention (one character's tokens across all frames of a story, plus its
reference), then a feed-forward; block ``k``'s output goes through a zero-initialised linear and is added to the
global hidden state after global block ``2k+1``. The zero-initialised output projections follow ControlNet and
PixArt's ControlNet-Transformer (PixArt-alpha repository, ``diffusion/model/nets/pixart_controlnet.py``).

Optionally (``box_embedding=True``, not in the paper) each subject token also gets an embedding of where it sits in
its box (:class:`BoxEmbedding`, after GLIGEN's Fourier box features): with absolute positions alone the ShapeStory
demo's branch learned layout and colour but no shapes (``training/shapestory/README.md``).

Everything runs on *packed* subject tokens (:class:`~lay2story_core.attention.TokenPacking`): the cost follows the
subject area, and tokens outside every subject are never computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import PatchEmbed
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..attention import TokenPacking
from .packed_attention import IdentityBank, PackedAttention


class SubjectBlock(nn.Module):
    """One subject block on packed tokens: modulation shared with the global branch's timestep embedding, masked
    self-attention, masked cross-attention, masked 3D self-attention, feed-forward, zero-initialised output."""

    def __init__(self, dim: int, heads: int, head_dim: int, ff_inner_dim: int | None, norm_eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.attn1 = PackedAttention(dim, heads, head_dim)  # masked self-attention (within a subject)
        self.attn2 = PackedAttention(dim, heads, head_dim)  # masked cross-attention (to the subject caption)
        self.norm3d = nn.LayerNorm(dim, eps=norm_eps)
        self.attn3d = PackedAttention(dim, heads, head_dim)  # masked 3D self-attention (across frames)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.ff = FeedForward(dim, activation_fn="gelu-approximate", inner_dim=ff_inner_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self,
        x: torch.Tensor,
        temb: torch.Tensor,
        caption: torch.Tensor,
        caption_valid: torch.Tensor | None,
        packing: TokenPacking,
        bank: IdentityBank | None = None,
        layer_index: int = 0,
        caption_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (T, D)``, ``temb (T, 6D)`` per packed token, ``caption (U, L, D)`` distinct subject captions and
        ``caption_index (S,)`` each slot's (``None``: one per slot). Returns the new state ``(T, D)`` and the
        zero-initialised output ``(T, D)`` for the global branch."""
        # 1. AdaLN-single modulation, as PixArt's blocks
        # (the table may wait on another device when a host keeps weights off the accelerator, as ComfyUI's
        # low-VRAM modes do)
        table = self.scale_shift_table[None].to(dtype=temb.dtype, device=temb.device) + temb.view(-1, 6, x.shape[-1])
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table.unbind(1)
        # 2. masked self-attention: each subject's tokens, within their frame
        h = self.norm1(x) * (1 + scale_msa) + shift_msa
        x = x + gate_msa * self.attn1.self_attention(h, packing.slot_segments)
        # 3. masked cross-attention to the slot's subject caption (PixArt applies no norm before cross-attention)
        x = x + self.attn2.cross_attention(x, caption, packing.slot_segments, caption_valid, caption_index)
        # 4. masked 3D self-attention: one character's tokens across the story's frames and its reference
        x = x + self.attn3d.self_attention(self.norm3d(x), packing.group_segments, bank, layer_index)
        # 5. feed-forward
        h = self.norm2(x) * (1 + scale_mlp) + shift_mlp
        x = x + gate_mlp * self.ff(h)
        return x, self.proj_out(x)


class BoxEmbedding(nn.Module):
    """Where a subject token sits in its box, as an embedding added to the token (GLIGEN-style Fourier features of
    box coordinates, here per token): ``(u, v, box width, box height)`` -> ``(T, D)``. The last linear is
    zero-initialised, so adding it to a trained branch changes nothing until it is trained.

    Without it a token only knows its absolute position; drawing a shape that fills the box then needs the
    token to work out the box's extent from the other tokens of its slot."""

    def __init__(self, dim: int, num_frequencies: int = 8) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies  # the frequencies are built in fp32 per call: a half-precision
        # buffer would round pi * 2^k (402.0 for 402.1) and shift the phases from what training saw
        features = 4 * (1 + 2 * num_frequencies)
        self.linear_1 = nn.Linear(features, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """``positions (T, 4)`` from :meth:`TokenPacking.box_positions` -> ``(T, D)``."""
        # 1. Fourier features (T, 4 * (1 + 2F))
        positions = positions.float()
        frequencies = torch.pi * 2.0 ** torch.arange(self.num_frequencies, device=positions.device,
                                                     dtype=torch.float32)
        angles = positions[:, :, None] * frequencies  # (T, 4, F)
        features = torch.cat([positions[:, :, None], angles.sin(), angles.cos()], dim=2).flatten(1)
        # 2. MLP to the branch width (T, D)
        return self.linear_2(self.act(self.linear_1(features.to(self.linear_1.weight.dtype))))


@dataclass
class SubjectBranchOutput(BaseOutput):
    """Per-block residuals of the subject branch, like diffusers' ``ControlNetOutput``, on packed subject tokens.

    Attributes:
        block_residuals: ``(T, D)`` per subject block, already multiplied by the subject scale; block ``k``'s is
            added to the global hidden state after global block ``injection_layers[k]``.
        injection_layers: the global block after which each residual is added.
        packing: the packing the residuals are laid out by (scatter to ``(I, N, D)``).
    """

    block_residuals: tuple[torch.Tensor, ...]
    injection_layers: tuple[int, ...]
    packing: TokenPacking

    def residual_after(self, layer: int) -> torch.Tensor | None:
        """The packed residual added after global block ``layer``, or ``None``."""
        for k, at in enumerate(self.injection_layers):
            if at == layer:
                return self.block_residuals[k]
        return None

    def add_to(self, hidden_states: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden_states (B, N, D)`` plus the residual of global block ``layer`` (scattered; overlaps averaged)."""
        residual = self.residual_after(layer)
        if residual is None:
            return hidden_states
        dense = self.packing.scatter(residual, num_images=hidden_states.shape[0])
        return hidden_states + dense.to(hidden_states.dtype)


class SubjectBranch(ModelMixin, ConfigMixin):
    """Lay2Story's subject branch (see the module docstring).

    Args:
        num_layers: number of subject blocks; one per two global blocks (14 for PixArt-XL's 28).
        num_attention_heads: attention heads (PixArt-XL: 16).
        attention_head_dim: width of one head (PixArt-XL: 72); the branch width is heads * head_dim.
        in_channels: latent channels of the VAE (4).
        mask_channels: channels of the reference mask (1).
        patch_size: patch size of the token grid, equal to the global branch's (2).
        sample_size: latent size the positional embedding is built for (64 for 512 px, 128 for 1024 px).
        interpolation_scale: positional-embedding interpolation, as PixArt (``None``: ``max(sample_size // 64, 1)``).
        ff_inner_dim: hidden width of the feed-forward (``None``: 4x the width, as PixArt).
        norm_eps: LayerNorm epsilon (PixArt: 1e-6).
        global_num_layers: depth of the global branch this branch is attached to; block ``k`` is added after global
            block ``inject_every * k + inject_every - 1``.
        inject_every: global blocks per subject block (2).
        box_embedding: add a :class:`BoxEmbedding` of each token's place in its box to the branch's tokens (off in
            branches saved before it existed; :meth:`with_box_embedding` adds it to a trained branch).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        num_layers: int = 14,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        mask_channels: int = 1,
        patch_size: int = 2,
        sample_size: int = 64,
        interpolation_scale: float | None = None,
        ff_inner_dim: int | None = None,
        norm_eps: float = 1e-6,
        global_num_layers: int = 28,
        inject_every: int = 2,
        box_embedding: bool = False,
    ) -> None:
        super().__init__()
        if num_layers * inject_every > global_num_layers:
            raise ValueError(f"num_layers: {num_layers} subject blocks x inject_every {inject_every} exceed "
                             f"global_num_layers {global_num_layers}")
        dim = num_attention_heads * attention_head_dim
        self.gradient_checkpointing = False
        # 1. 9-channel input (reference latent, reference mask, noisy latent) -> 4 channels. Initialised to pass the
        #    noisy latent through, so a patch embedding copied from the global branch starts meaningful.
        self.input_conv = nn.Conv2d(2 * in_channels + mask_channels, in_channels, kernel_size=3, padding=1)
        with torch.no_grad():
            self.input_conv.weight.zero_()
            self.input_conv.bias.zero_()
            for c in range(in_channels):
                self.input_conv.weight[c, in_channels + mask_channels + c, 1, 1] = 1.0
        scale = interpolation_scale if interpolation_scale is not None else max(sample_size // 64, 1)
        self.pos_embed = PatchEmbed(
            height=sample_size, width=sample_size, patch_size=patch_size, in_channels=in_channels,
            embed_dim=dim, interpolation_scale=scale,
        )
        self.box_embed = BoxEmbedding(dim) if box_embedding else None
        self.blocks = nn.ModuleList(
            [
                SubjectBlock(dim, num_attention_heads, attention_head_dim, ff_inner_dim, norm_eps)
                for _ in range(num_layers)
            ]
        )

    @property
    def inner_dim(self) -> int:
        return self.config.num_attention_heads * self.config.attention_head_dim

    def check_fits(self, transformer, name: str = "subject_branch") -> None:
        """Raise ``ValueError`` naming ``name`` when this branch was not made for ``transformer`` (width, depth)."""
        depth, made_for = transformer.config.num_layers, self.config.global_num_layers
        if self.inner_dim != transformer.inner_dim or made_for != depth:
            raise ValueError(f"{name} (width {self.inner_dim}, made for {made_for} global blocks) does not fit the "
                             f"transformer (width {transformer.inner_dim}, {depth} blocks)")

    def injection_layer(self, index: int) -> int:
        """The global block after which subject block ``index`` is added."""
        return self.config.inject_every * index + self.config.inject_every - 1

    @classmethod
    def from_transformer(cls, transformer, num_layers: int | None = None, **overrides) -> SubjectBranch:
        """Build a branch for a diffusers ``PixArtTransformer2DModel`` and initialise it from its weights.

        Subject block ``k`` copies global block ``2k+1`` (the one it is added after): ``attn1`` -> masked
        self-attention and masked 3D self-attention, ``attn2`` -> masked cross-attention, ``ff``, modulation table;
        the patch embedding is copied too. Output projections stay zero, so the dual-branch model starts equal to
        the global model.
        """
        config = transformer.config
        every = overrides.pop("inject_every", 2)
        layers = num_layers if num_layers is not None else config.num_layers // every
        branch = cls(
            num_layers=layers,
            num_attention_heads=config.num_attention_heads,
            attention_head_dim=config.attention_head_dim,
            in_channels=config.in_channels,
            patch_size=config.patch_size,
            sample_size=config.sample_size,
            interpolation_scale=config.interpolation_scale,
            global_num_layers=config.num_layers,
            inject_every=every,
            **overrides,
        )
        branch.pos_embed.load_state_dict(transformer.pos_embed.state_dict())
        for k, block in enumerate(branch.blocks):
            source = transformer.transformer_blocks[branch.injection_layer(k)]
            block.attn1.load_state_dict(_attention_weights(source.attn1))
            block.attn3d.load_state_dict(_attention_weights(source.attn1))
            block.attn2.load_state_dict(_attention_weights(source.attn2))
            if block.ff.state_dict().keys() == source.ff.state_dict().keys():
                block.ff.load_state_dict(source.ff.state_dict())
            block.scale_shift_table.data.copy_(source.scale_shift_table.data)
        if transformer.dtype != branch.dtype or transformer.device != branch.device:
            branch = branch.to(device=transformer.device, dtype=transformer.dtype)
        return branch

    def with_box_embedding(self) -> SubjectBranch:
        """This branch with a (zero-initialised, so output-preserving) box embedding: a warm start for training it."""
        if self.config.box_embedding:
            return self
        config = {k: v for k, v in self.config.items() if not k.startswith("_")}
        branch = type(self).from_config({**config, "box_embedding": True})
        missing, unexpected = branch.load_state_dict(self.state_dict(), strict=False)
        if unexpected or any(not key.startswith("box_embed.") for key in missing):
            raise ValueError(f"subject_branch: cannot add a box embedding (missing {missing}, unexpected "
                             f"{unexpected})")
        if branch.dtype != self.dtype or branch.device != self.device:
            branch = branch.to(device=self.device, dtype=self.dtype)
        return branch

    def embed(self, subject_input: torch.Tensor) -> torch.Tensor:
        """``(I, 9, H, W)`` -> ``(I, N, D)`` tokens."""
        buffer = getattr(self.pos_embed, "pos_embed", None)
        if buffer is not None and buffer.device != subject_input.device:  # a host loaded the branch partially
            self.pos_embed.pos_embed = buffer.to(subject_input.device)
        return self.pos_embed(self.input_conv(subject_input))

    def forward(
        self,
        subject_input: torch.Tensor,
        temb: torch.Tensor,
        caption: torch.Tensor,
        caption_valid: torch.Tensor | None,
        packing: TokenPacking,
        *,
        caption_index: torch.Tensor | None = None,
        bank: IdentityBank | None = None,
        subject_scale: float | torch.Tensor = 1.0,
        return_dict: bool = True,
    ) -> SubjectBranchOutput | tuple:
        """Run every subject block and return its residual for the global branch.

        The branch reads only its own inputs (never the global hidden state), so all blocks run before the global
        blocks, as a ControlNet does; the host adds ``block_residuals[k]`` after global block
        ``injection_layer(k)``.

        Args:
            subject_input: ``(I, 9, h, w)`` per image: reference latent, reference mask, noisy (or clean
                reference) latent.
            temb: ``(I, 6D)`` the global branch's AdaLN-single modulation of each image.
            caption: ``(U, L, D)`` subject captions through the global branch's caption projection.
            caption_valid: ``(U, L)`` bool padding mask, or ``None``.
            packing: the pass's :class:`TokenPacking` over the ``I`` images (built once per pass).
            caption_index: ``(S,)`` the caption of each slot (``None``: one caption per slot).
            bank: identity key/value bank (write/read scheme), or ``None``.
            subject_scale: layout strength: a number, or ``(S,)`` one per slot (per character); 0 turns the
                branch's effect off, 1 is the trained strength.
        """
        # 1. tokens (I, N, D) -> packed subject tokens (T, D), plus where each sits in its box; modulation (T, 6D)
        x = packing.gather(self.embed(subject_input))
        if self.box_embed is not None:
            patch = self.config.patch_size
            grid = (subject_input.shape[-2] // patch, subject_input.shape[-1] // patch)
            x = x + self.box_embed(packing.box_positions(*grid)).to(x.dtype)
        temb_tok = temb.index_select(0, packing.token_image)
        # 2. per-token scale (T, 1)
        if isinstance(subject_scale, torch.Tensor):
            scale = subject_scale.to(device=x.device, dtype=x.dtype).index_select(0, packing.token_slot)[:, None]
        else:
            scale = float(subject_scale)
        # 3. blocks, each giving a residual
        residuals = []
        for index in range(len(self.blocks)):
            x, out = self.block_forward(index, x, temb_tok, caption, caption_valid, packing, bank, caption_index)
            residuals.append(out * scale if not (isinstance(scale, float) and scale == 1.0) else out)
        layers = tuple(self.injection_layer(k) for k in range(len(self.blocks)))
        if not return_dict:
            return tuple(residuals), layers
        return SubjectBranchOutput(block_residuals=tuple(residuals), injection_layers=layers, packing=packing)

    def block_forward(
        self,
        index: int,
        x: torch.Tensor,
        temb: torch.Tensor,
        caption: torch.Tensor,
        caption_valid: torch.Tensor | None,
        packing: TokenPacking,
        bank: IdentityBank | None = None,
        caption_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run subject block ``index`` on packed tokens (see :meth:`SubjectBlock.forward`)."""
        block = self.blocks[index]
        args = (x, temb, caption, caption_valid, packing, bank, index, caption_index)
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)


def _attention_weights(attn: nn.Module) -> dict[str, torch.Tensor]:
    """The q/k/v/out weights of a diffusers ``Attention`` under :class:`PackedAttention`'s names."""
    state = attn.state_dict()
    return {k: v for k, v in state.items() if k.split(".")[0] in ("to_q", "to_k", "to_v", "to_out")}
