"""Dense additive-mask masked attention, the paper's formula ``softmax(QK^T / sqrt(d) + M) V``.

A *reference* for tests and the baseline of ``bench/attention.py``: it materialises ``(N, N)`` (self) and
``(f*N, f*N)`` (3D) masks, which is exactly what the token-sparse kernels in :mod:`.masked` avoid. Rows outside the
mask are zero, overlapping slots are averaged, as in the sparse kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .packing import SubjectSlots


def dense_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``q (M, H, D)``, ``k/v (M', H, D)``, ``allowed (M, M')`` bool; rows with no allowed key are zero."""
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
    has_key = allowed.any(dim=1)
    bias = bias.masked_fill(~has_key[:, None], 0.0)  # keep empty rows finite; zeroed below
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=bias)
    return out.transpose(0, 1) * has_key[:, None, None].to(q.dtype)


def _accumulate(total, count, image, mask, out):
    total[image] = total[image] + out * mask[:, None, None].to(out.dtype)
    count[image] = count[image] + mask.to(count.dtype)


def _average(total, count):
    return total / count.clamp(min=1)[..., None, None].to(total.dtype)


def dense_masked_self_attention(q, k, v, slots: SubjectSlots) -> torch.Tensor:
    """Reference of :func:`masked_self_attention`: one ``(N, N)`` additive mask per slot."""
    total = torch.zeros_like(q)
    count = torch.zeros(q.shape[:2], device=q.device)
    for s in range(slots.num_slots):
        image, mask = int(slots.image_index[s]), slots.masks[s]
        out = dense_masked_attention(q[image], k[image], v[image], mask[:, None] & mask[None, :])
        _accumulate(total, count, image, mask, out)
    return _average(total, count)


def dense_masked_cross_attention(q, k, v, slots: SubjectSlots, key_valid=None) -> torch.Tensor:
    """Reference of :func:`masked_cross_attention`: one ``(N, L)`` additive mask per slot."""
    total = torch.zeros(*q.shape[:3], v.shape[-1], dtype=q.dtype, device=q.device)
    count = torch.zeros(q.shape[:2], device=q.device)
    for s in range(slots.num_slots):
        image, mask = int(slots.image_index[s]), slots.masks[s]
        text = torch.ones(k.shape[1], dtype=torch.bool, device=q.device) if key_valid is None else key_valid[s]
        if not bool(text.any()):
            text = text.clone()
            text[0] = True
        out = dense_masked_attention(q[image], k[s], v[s], mask[:, None] & text[None, :])
        _accumulate(total, count, image, mask, out)
    return _average(total, count)


def dense_masked_3d_attention(q, k, v, slots: SubjectSlots) -> torch.Tensor:
    """Reference of :func:`masked_3d_attention`: per group, one ``(I*N, I*N)`` additive mask over all images."""
    num_images, num_tokens = q.shape[:2]
    flat = num_images * num_tokens
    qf, kf, vf = (x.reshape(flat, *x.shape[2:]) for x in (q, k, v))
    total = torch.zeros_like(qf)
    count = torch.zeros(flat, device=q.device)
    for group in torch.unique(slots.group_index).tolist():
        member = torch.zeros(flat, dtype=torch.bool, device=q.device)
        for s in (slots.group_index == group).nonzero().flatten().tolist():
            image = int(slots.image_index[s])
            member[image * num_tokens:(image + 1) * num_tokens] |= slots.masks[s]
        out = dense_masked_attention(qf, kf, vf, member[:, None] & member[None, :])
        total = total + out * member[:, None, None].to(out.dtype)
        count = count + member.to(count.dtype)
    return _average(total, count).view_as(q)
