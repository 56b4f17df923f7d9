"""On CUDA: every attention backend (padded SDPA, nested jagged SDPA with flash/efficient kernels, compiled
FlexAttention) equals the dense reference in bf16, and the measured choice is one of them. Skipped without CUDA;
``bench/gpu.py`` runs them with ``pytest -m cuda``."""

import pytest
import torch

from lay2story_core.attention import (
    BACKENDS,
    BackendChooser,
    SubjectSlots,
    TokenPacking,
    dense_masked_3d_attention,
    dense_masked_cross_attention,
    dense_masked_self_attention,
    masked_3d_attention,
    masked_cross_attention,
    masked_self_attention,
    resolve_backend,
)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
HEADS, DIM = 4, 64


def _slots(frames=4, tokens=256, device="cuda"):
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(frames, tokens, generator=gen) < 0.35
    masks[1] = True
    other = torch.rand(frames, tokens, generator=gen) < 0.2
    all_masks = torch.stack([m for f in range(frames) for m in (masks[f], other[f])])
    return SubjectSlots(all_masks, torch.arange(frames).repeat_interleave(2), torch.tensor([0, 1] * frames)).to(device)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_equals_dense_on_cuda(backend):
    slots = _slots()
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(4, 256, HEADS, DIM, generator=gen, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = {name: fn(q.float(), k.float(), v.float(), slots) for name, fn in
           (("self", dense_masked_self_attention), ("3d", dense_masked_3d_attention))}
    ours = {"self": masked_self_attention(q, k, v, slots, backend=backend),
            "3d": masked_3d_attention(q, k, v, slots, backend=backend)}
    for name in ref:
        assert torch.isfinite(ours[name]).all()
        torch.testing.assert_close(ours[name].float(), ref[name], atol=2e-2, rtol=2e-2)
    text_k, text_v = (torch.randn(slots.num_slots, 12, HEADS, DIM, generator=gen, device="cuda",
                                  dtype=torch.bfloat16) for _ in range(2))
    lengths = torch.arange(1, slots.num_slots + 1, device="cuda")[:, None] % 12 + 1
    valid = torch.arange(12, device="cuda")[None] < lengths
    cross = masked_cross_attention(q, text_k, text_v, slots, valid, backend=backend)
    ref_cross = dense_masked_cross_attention(q.float(), text_k.float(), text_v.float(), slots, valid)
    torch.testing.assert_close(cross.float(), ref_cross, atol=2e-2, rtol=2e-2)


def test_auto_backend_is_measured_on_cuda():
    chooser = BackendChooser(segments=3, segment_len=512, repeats=2)
    best = resolve_backend("auto", "cuda", chooser)
    assert best in BACKENDS and best in chooser.timings
    packing = TokenPacking.build(_slots(), 4, "auto", chooser)
    assert packing.slot_segments.backend == best
