"""Token-sparse masked attention: masked self-, cross- and 3D self-attention with one fused SDPA call each.

All tensors are laid out ``(tokens, heads, head_dim)``. The packed functions (``segment_*``) are what the models use
inside their blocks (the packing is built once per forward); the full-tensor functions (``masked_*``) take
``(images, N, heads, head_dim)`` tensors and :class:`SubjectSlots`, and are the public, testable form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backends import SELF_ATTENTION, nested_cross_attention, padded_attention
from .packing import Segments, SubjectSlots, TokenPacking


def _valid_rows(valid: torch.Tensor) -> torch.Tensor:
    """Make every row of a key-validity mask keep at least its first key (an empty row would give NaN); no host
    synchronisation."""
    first = torch.zeros(valid.shape[-1], dtype=torch.bool, device=valid.device)
    first[0] = True
    return valid | (~valid.any(dim=-1, keepdim=True) & first)


def segment_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    segments: Segments,
    *,
    extra_key: torch.Tensor | None = None,
    extra_value: torch.Tensor | None = None,
    extra_valid: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Self-attention restricted to segments of packed tokens.

    Args:
        query, key, value: ``(T, H, D)`` packed tokens.
        segments: the padded layout (``Segments.from_ids``) of the ``T`` tokens.
        extra_key, extra_value: optional ``(num_ids, E, H, D)`` extra keys/values per segment id (e.g. the stored
            identity-frame tokens of StoryDiffusion's read pass), indexed by the *original* segment id.
        extra_valid: ``(num_ids, E)`` bool validity of the extra keys (default: all valid).

    Returns:
        ``(T, H, D)``.
    """
    if segments.num_segments == 0:
        return query.new_zeros(query.shape[0], query.shape[1], value.shape[-1])
    if extra_key is None and segments.backend != "padded":  # fused backends (no bank keys): one call, no padding
        return SELF_ATTENTION[segments.backend](query, key, value, segments, scale=scale)
    if extra_key is None:
        return padded_attention(query, key, value, segments, scale=scale)
    # 1. pad each segment: (G, L, H, D) -> (G, H, L, D)
    q = segments.pad(query).transpose(1, 2)
    k = segments.pad(key).transpose(1, 2)
    v = segments.pad(value).transpose(1, 2)
    valid = segments.valid
    # 2. append the extra keys/values of each segment's id
    if extra_key is not None:
        ek = extra_key.index_select(0, segments.segment_ids).transpose(1, 2).to(k.dtype)
        ev = extra_value.index_select(0, segments.segment_ids).transpose(1, 2).to(v.dtype)
        k = torch.cat([k, ek], dim=2)
        v = torch.cat([v, ev], dim=2)
        if valid is not None or extra_valid is not None:
            own = valid if valid is not None else q.new_ones(q.shape[0], q.shape[2], dtype=torch.bool)
            extra = (
                extra_valid.index_select(0, segments.segment_ids)
                if extra_valid is not None
                else q.new_ones(q.shape[0], ek.shape[2], dtype=torch.bool)
            )
            valid = torch.cat([own, extra], dim=1)
    # 3. one fused attention call with a key-padding mask (G, 1, 1, L_k), never a (T, T) mask
    attn_mask = None if valid is None else valid[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    # 4. back to packed tokens
    return segments.unpad(out.transpose(1, 2))


def segment_cross_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    segments: Segments,
    key_valid: torch.Tensor | None = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """Cross-attention from packed subject tokens to one text sequence per segment.

    Args:
        query: ``(T, H, D)`` packed tokens.
        key, value: ``(num_ids, L, H, D)`` text tokens per segment id (a slot's subject caption).
        key_valid: ``(num_ids, L)`` bool text padding mask (``True`` = real token). A row with no valid token keeps
            its first token, so nothing is ever NaN.

    Returns:
        ``(T, H, D)``.
    """
    if segments.num_segments == 0:
        return query.new_zeros(query.shape[0], query.shape[1], value.shape[-1])
    valid = None if key_valid is None else _valid_rows(key_valid.index_select(0, segments.segment_ids).bool())
    if segments.backend != "padded":  # jagged queries and keys (only the valid text tokens), no mask
        k = key.index_select(0, segments.segment_ids).to(query.dtype)
        v = value.index_select(0, segments.segment_ids).to(query.dtype)
        return nested_cross_attention(query, k, v, segments, valid, scale=scale)
    # 1. pad the queries per segment and pick each segment's text: (G, H, L_q, D), (G, H, L_t, D)
    q = segments.pad(query).transpose(1, 2)
    k = key.index_select(0, segments.segment_ids).transpose(1, 2).to(q.dtype)
    v = value.index_select(0, segments.segment_ids).transpose(1, 2).to(q.dtype)
    # 2. text padding mask (padded query rows are harmless: they see valid keys and are dropped)
    attn_mask = None if valid is None else valid[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    return segments.unpad(out.transpose(1, 2))


def _as_tokens(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: expected (images, tokens, heads, head_dim), got shape {tuple(x.shape)}")


def masked_self_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, slots: SubjectSlots, backend: str = "auto"
) -> torch.Tensor:
    """Each slot's tokens attend to the tokens of the same slot. ``(I, N, H, D) -> (I, N, H, D)``, zeros outside
    every subject, overlapping slots averaged."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        _as_tokens(x, name)
    packing = TokenPacking.build(slots, query.shape[0], backend)
    out = segment_attention(packing.gather(query), packing.gather(key), packing.gather(value), packing.slot_segments)
    return packing.scatter(out)


def masked_cross_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    slots: SubjectSlots,
    key_valid: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Each slot's tokens attend to that slot's text. ``query (I, N, H, D)``, ``key/value (S, L, H, D)``,
    ``key_valid (S, L)``; returns ``(I, N, H, D)``."""
    _as_tokens(query, "query")
    if key.shape[0] != slots.num_slots:
        raise ValueError(f"key: expected one text per slot ({slots.num_slots}), got {key.shape[0]}")
    packing = TokenPacking.build(slots, query.shape[0], backend)
    out = segment_cross_attention(packing.gather(query), key, value, packing.slot_segments, key_valid)
    return packing.scatter(out)


def masked_3d_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    slots: SubjectSlots,
    *,
    extra_key: torch.Tensor | None = None,
    extra_value: torch.Tensor | None = None,
    extra_valid: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Masked 3D self-attention: the subject tokens of all slots of one group (one character across the frames of a
    story, plus its reference) attend to each other. ``(I, N, H, D) -> (I, N, H, D)``.

    Slots of one group must not overlap on the same image (a character appears once per frame)."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        _as_tokens(x, name)
    packing = TokenPacking.build(slots, query.shape[0], backend)
    out = segment_attention(
        packing.gather(query),
        packing.gather(key),
        packing.gather(value),
        packing.group_segments,
        extra_key=extra_key,
        extra_value=extra_value,
        extra_valid=extra_valid,
    )
    return packing.scatter(out)
