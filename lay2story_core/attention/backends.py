"""Attention backends for packed segments: the same masked attention, computed three ways.

* ``"padded"``: pad the segments to ``(G, L)`` and run one ``scaled_dot_product_attention`` call with a key-padding
  mask (the CPU path; also the only backend with extra bank keys). When the layout is the identity (equal segments
  already in order, e.g. layout off) padding is a view and no mask is passed, so SDPA may use its flash kernel.
* ``"nested"``: SDPA on jagged nested tensors (no padding, no mask): flash / memory-efficient kernels on CUDA.
* ``"flex"``: FlexAttention over the whole packed sequence with a block mask "same segment" (compiled on CUDA;
  eager on CPU, where it materialises the scores and is only used by tests).

All three equal the dense additive-mask reference (``tests/core/attention/test_backends.py``). ``"auto"`` is
``"padded"`` on CPU; on CUDA it is chosen by measurement (:class:`BackendChooser`, ``bench/attention.py``).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("padded", "nested", "flex")


def available_backends(device: torch.device | str) -> tuple[str, ...]:
    """Backends that run on ``device`` (all of them; ``flex`` is eager, hence slow, off CUDA)."""
    return BACKENDS


def resolve_backend(name: str, device: torch.device | str, chooser: BackendChooser | None = None) -> str:
    """``"auto"`` -> ``"padded"`` on CPU, on CUDA the ``chooser``'s measured pick (``"padded"`` without one);
    anything else is checked against :data:`BACKENDS`."""
    if name == "auto":
        if torch.device(device).type != "cuda" or chooser is None:
            return "padded"
        return chooser.best
    if name not in BACKENDS:
        raise ValueError(f"attention backend: {name!r} is not one of {('auto', *BACKENDS)}")
    return name


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def _flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention if not torch.cuda.is_available() else _compiled_flex()


def flex_block_mask(token_segment: torch.Tensor):
    """FlexAttention block mask "query and key are in the same segment" over ``T`` packed tokens."""
    from torch.nn.attention.flex_attention import create_block_mask

    ids = token_segment

    def same_segment(b, h, q_idx, kv_idx):
        return ids[q_idx] == ids[kv_idx]

    length = ids.shape[0]
    block = 128 if length >= 128 else max(16, 1 << (length - 1).bit_length())
    return create_block_mask(same_segment, None, None, length, length, device=ids.device, BLOCK_SIZE=block)


def padded_attention(q, k, v, segments, scale=None):
    """``(T, H, D)`` -> ``(T, H, D)`` over padded segments, one SDPA call."""
    qp, kp, vp = (segments.pad(x).transpose(1, 2) for x in (q, k, v))  # (G, H, L, D)
    mask = None if segments.valid is None else segments.valid[:, None, None, :]
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, scale=scale)
    return segments.unpad(out.transpose(1, 2))


def _jagged(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``(T, H, D)`` sorted by segment -> nested ``(G, H, j, D)``."""
    return torch.nested.nested_tensor_from_jagged(x, offsets).transpose(1, 2)


def nested_attention(q, k, v, segments, scale=None):
    """``(T, H, D)`` -> ``(T, H, D)`` with SDPA on jagged nested tensors (no padding)."""
    out = F.scaled_dot_product_attention(*(_jagged(segments.sort(x), segments.offsets) for x in (q, k, v)),
                                         scale=scale)
    return segments.unsort(out.transpose(1, 2).values())


def flex_segment_attention(q, k, v, segments, scale=None):
    """``(T, H, D)`` -> ``(T, H, D)``: one FlexAttention call over all packed tokens with a same-segment mask."""
    block_mask = segments.block_mask
    if block_mask is None:
        block_mask = flex_block_mask(segments.token_segment)
    out = _flex_attention()(*(x.transpose(0, 1)[None] for x in (q, k, v)), block_mask=block_mask, scale=scale)
    return out[0].transpose(0, 1)


def nested_cross_attention(q, k, v, segments, valid, scale=None):
    """Packed queries ``(T, H, D)`` to per-segment texts ``k/v (G, L, H, D)`` with validity ``(G, L)`` (or None),
    as jagged nested tensors: only valid text tokens are keys, no mask."""
    num, length = k.shape[:2]
    if valid is None:
        valid = torch.ones(num, length, dtype=torch.bool, device=k.device)
    counts = valid.sum(dim=1)
    key_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    kj, vj = (_jagged(x[valid], key_offsets) for x in (k, v))
    qj = _jagged(segments.sort(q), segments.offsets)
    out = F.scaled_dot_product_attention(qj, kj, vj, scale=scale)
    return segments.unsort(out.transpose(1, 2).values())


SELF_ATTENTION = {"padded": padded_attention, "nested": nested_attention, "flex": flex_segment_attention}


@dataclass
class BackendChooser:
    """Picks the fastest backend on CUDA by timing each on a representative packed problem once.

    ``best`` measures on first use (``heads`` x ``head_dim``, ``segments`` of ``segment_len`` tokens, in ``dtype``)
    and keeps the answer. Hold one per model (it is state, not a global). ``timings`` keeps the measured seconds.
    """

    heads: int = 16
    head_dim: int = 72
    segments: int = 4
    segment_len: int = 1024
    dtype: torch.dtype = torch.bfloat16
    candidates: tuple[str, ...] = BACKENDS
    repeats: int = 5
    timings: dict = field(default_factory=dict)
    _best: str | None = None

    @property
    def best(self) -> str:
        if self._best is None:
            self._best = self.measure()
        return self._best

    def measure(self, device: torch.device | str = "cuda") -> str:
        from .packing import Segments

        device = torch.device(device)
        lengths = [max(1, self.segment_len - (i * self.segment_len) // 8) for i in range(self.segments)]  # ragged
        ids = torch.repeat_interleave(torch.arange(self.segments, device=device),
                                      torch.tensor(lengths, device=device))
        base = Segments.from_ids(ids)
        q, k, v = (torch.randn(ids.shape[0], self.heads, self.head_dim, device=device, dtype=self.dtype)
                   for _ in range(3))
        for name in self.candidates:
            try:
                segs = base.with_backend(name)
                fn = SELF_ATTENTION[name]
                fn(q, k, v, segs)  # warm-up (compiles flex)
                _sync(device)
                start = time.perf_counter()
                for _ in range(self.repeats):
                    fn(q, k, v, segs)
                _sync(device)
                self.timings[name] = (time.perf_counter() - start) / self.repeats
            except Exception as err:  # noqa: BLE001 - a backend that fails here is simply not chosen
                logger.info("attention backend %s unavailable on %s: %s", name, device, err)
        best = min(self.timings, key=self.timings.get) if self.timings else "padded"
        logger.info("attention backend timings %s -> %s", self.timings, best)
        return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
