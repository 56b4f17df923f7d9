"""Attention layers of the subject branch that run on packed subject tokens, and the identity key/value bank.

Parameter names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) follow diffusers' ``Attention`` so the layers are
initialised by loading a PixArt block's ``attn1``/``attn2`` state dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..attention import Segments, segment_attention, segment_cross_attention


class PackedAttention(nn.Module):
    """Multi-head attention over packed tokens ``(T, dim)``; the mask is given by :class:`Segments`.

    Args:
        dim: token width (query input and output).
        heads: number of heads.
        head_dim: width of one head.
        bias: whether the q/k/v projections have a bias (PixArt: yes).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool = True) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(dim, inner, bias=bias)
        self.to_v = nn.Linear(dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out[1](self.to_out[0](x.flatten(-2)))

    def self_attention(
        self,
        x: torch.Tensor,
        segments: Segments,
        bank: IdentityBank | None = None,
        bank_key: object | None = None,
    ) -> torch.Tensor:
        """Masked (or 3D) self-attention of packed tokens ``(T, dim)`` within ``segments``.

        With an identity ``bank`` in write mode, the keys/values of each segment are stored under ``bank_key``; in
        read mode, the stored keys/values of the same segment id are attended to as well (StoryDiffusion's
        write/read scheme for long stories).
        """
        # 1. project: (T, dim) -> (T, heads, head_dim)
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(x)), self._split(self.to_v(x))
        extra = (None, None, None)
        if bank is not None and bank.mode == "write":
            bank.write(bank_key, segments, k, v)
        elif bank is not None and bank.mode == "read":
            extra = bank.read(bank_key, segments)
        # 2. one fused attention call per segmentation
        out = segment_attention(q, k, v, segments, extra_key=extra[0], extra_value=extra[1], extra_valid=extra[2])
        return self._out(out)

    def cross_attention(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        segments: Segments,
        context_valid: torch.Tensor | None,
        context_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed tokens ``(T, dim)`` attend to their segment's text.

        ``context (U, L, dim)`` holds distinct texts and ``context_index (S,)`` picks each segment's (``None``: one
        text per segment, ``U == S``); ``context_valid (U, L)`` is the padding mask. Keys/values are computed once
        per distinct text.
        """
        q = self._split(self.to_q(x))
        k, v = self._split(self.to_k(context)), self._split(self.to_v(context))
        if context_index is not None:
            k, v = k.index_select(0, context_index), v.index_select(0, context_index)
            context_valid = None if context_valid is None else context_valid.index_select(0, context_index)
        return self._out(segment_cross_attention(q, k, v, segments, context_valid))


@dataclass
class IdentityBank:
    """Keys/values of the identity frames' subject tokens, per (denoising step, layer) and per 3D group id.

    ``mode`` is ``"write"`` while the identity frames are generated and ``"read"`` while later chunks are; the
    pipeline sets ``step`` before each model call. Stored tensors can be kept on another device (``storage_device``,
    e.g. the CPU for long stories on a small GPU) and in another dtype.
    """

    mode: str = "write"
    step: int = 0
    storage_device: torch.device | str | None = None
    storage_dtype: torch.dtype | None = None
    _store: dict = field(default_factory=dict, repr=False)

    def write(self, layer_key: object, segments: Segments, key: torch.Tensor, value: torch.Tensor) -> None:
        padded_k, padded_v = segments.pad(key), segments.pad(value)  # (G, L, H, D)
        valid = segments.valid
        for i, group in enumerate(segments.segment_ids.tolist()):
            rows = slice(None) if valid is None else valid[i]
            self._store[(self.step, layer_key, group)] = (self._keep(padded_k[i][rows]), self._keep(padded_v[i][rows]))

    def put(self, step: int, layer_key: object, group: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store ``(E, H, D)`` keys/values of group ``group`` for (``step``, ``layer_key``) as a write would (e.g. the
        kept frames of a story being redone, :mod:`lay2story_core.pipelines.redo`)."""
        self._store[(step, layer_key, group)] = (self._keep(key), self._keep(value))

    def entries(self) -> list[tuple[tuple, torch.Tensor, torch.Tensor]]:
        """``((step, layer_key, group), keys, values)`` of everything stored."""
        return [(k, kv[0], kv[1]) for k, kv in self._store.items()]

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(device=self.storage_device or x.device, dtype=self.storage_dtype or x.dtype)

    def read(self, layer_key: object, segments: Segments):
        """Extra keys/values ``(num_ids, E, H, D)`` indexed by group id, and their validity ``(num_ids, E)``."""
        ids = segments.segment_ids.tolist()
        found = {g: self._store[(self.step, layer_key, g)] for g in ids if (self.step, layer_key, g) in self._store}
        if not found:
            return None, None, None
        device = segments.segment_ids.device
        sample_k = next(iter(found.values()))[0]
        length = max(k.shape[0] for k, _ in found.values())
        num_ids = max(ids) + 1
        extra_k = sample_k.new_zeros((num_ids, length, *sample_k.shape[1:]), device=device)
        extra_v = torch.zeros_like(extra_k)
        valid = torch.zeros(num_ids, length, dtype=torch.bool, device=device)
        for group, (k, v) in found.items():
            extra_k[group, : k.shape[0]] = k.to(device)
            extra_v[group, : v.shape[0]] = v.to(device)
            valid[group, : k.shape[0]] = True
        return extra_k, extra_v, valid

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self._store.values())
