"""Every attention backend (padded SDPA, jagged nested SDPA, FlexAttention) equals the dense additive-mask
reference, and the view fast paths (identity segments, whole-image packings) equal the general gather/scatter."""

import warnings

import pytest
import torch

from lay2story_core.attention import (
    BACKENDS,
    BackendChooser,
    Segments,
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
from lay2story_core.attention.masked import _valid_rows

HEADS, DIM = 2, 8

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # FlexAttention warns when run eagerly (CPU)


def _slots(case: str, gen: torch.Generator, frames: int = 4, tokens: int = 16) -> SubjectSlots:
    if case == "full":  # layout off: identity segments, whole-image packing
        return SubjectSlots.one_per_image(torch.ones(frames, tokens, dtype=torch.bool))
    masks = torch.rand(frames, tokens, generator=gen) < 0.4
    masks[1] = True
    masks[2] = False
    masks[3, 5] = True
    if case == "one":
        return SubjectSlots.one_per_image(masks)
    # two characters per frame, overlapping on a few tokens, two groups (3D segments not sorted by group)
    other = torch.rand(frames, tokens, generator=gen) < 0.3
    all_masks = torch.stack([m for f in range(frames) for m in (masks[f], other[f])])
    images = torch.arange(frames).repeat_interleave(2)
    groups = torch.tensor([0, 1] * frames)
    return SubjectSlots(all_masks, images, groups)


def _qkv(gen, frames=4, tokens=16, grad=False):
    return [torch.randn(frames, tokens, HEADS, DIM, generator=gen).requires_grad_(grad) for _ in range(3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["full", "one", "two"])
def test_self_and_3d_attention_every_backend_equals_dense(backend, case):
    gen = torch.Generator().manual_seed(BACKENDS.index(backend) * 10 + len(case))
    slots = _slots(case, gen)
    q, k, v = _qkv(gen)
    torch.testing.assert_close(masked_self_attention(q, k, v, slots, backend=backend),
                               dense_masked_self_attention(q, k, v, slots), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked_3d_attention(q, k, v, slots, backend=backend),
                               dense_masked_3d_attention(q, k, v, slots), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["full", "two"])
def test_cross_attention_every_backend_equals_dense(backend, case):
    gen = torch.Generator().manual_seed(5)
    slots = _slots(case, gen)
    q = torch.randn(4, 16, HEADS, DIM, generator=gen)
    k, v = (torch.randn(slots.num_slots, 6, HEADS, DIM, generator=gen) for _ in range(2))
    valid = torch.arange(6)[None, :] < torch.randint(1, 7, (slots.num_slots, 1), generator=gen)
    valid[0] = False  # an empty caption keeps its first token, never NaN
    valid[-1, 1] = False  # not a prefix: only validity matters
    out = masked_cross_attention(q, k, v, slots, valid, backend=backend)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, dense_masked_cross_attention(q, k, v, slots, valid), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ["padded", "nested"])
def test_gradients_of_fused_backends_equal_dense(backend):
    gen = torch.Generator().manual_seed(9)
    slots = _slots("two", gen)
    inputs = _qkv(gen, grad=True)
    weight = torch.linspace(-1, 1, 4 * 16 * HEADS * DIM).view(4, 16, HEADS, DIM)
    sparse = lambda a, b, c, s: masked_3d_attention(a, b, c, s, backend=backend)  # noqa: E731
    grads = [torch.autograd.grad((fn(*inputs, slots) * weight).sum(), inputs)
             for fn in (sparse, dense_masked_3d_attention)]
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_identity_segments_and_whole_image_packing_are_views():
    slots = SubjectSlots.one_per_image(torch.ones(3, 8, dtype=torch.bool))
    packing = TokenPacking.build(slots, 5)  # 3 covered frames + 2 without slots (the CFG half)
    assert packing.prefix and packing.slot_segments.identity and packing.group_segments.identity
    x = torch.randn(5, 8, 4)
    packed = packing.gather(x)
    assert packed.data_ptr() == x.data_ptr() and packed.shape == (24, 4)
    assert packing.slot_segments.pad(packed).data_ptr() == x.data_ptr()
    out = packing.scatter(packed, num_images=4)
    torch.testing.assert_close(out[:3], x[:3])
    assert out[3].abs().sum() == 0
    target = torch.randn(4, 8, 4)
    torch.testing.assert_close(packing.add_into(target.clone(), packed), target + out)


def test_general_packing_add_into_equals_scatter():
    gen = torch.Generator().manual_seed(3)
    slots = _slots("two", gen)
    packing = TokenPacking.build(slots, 6)  # two images without slots
    assert not packing.prefix
    packed = torch.randn(packing.num_tokens, 4, generator=gen)
    target = torch.randn(4, 16, 4, generator=gen)
    torch.testing.assert_close(packing.add_into(target.clone(), packed), target + packing.scatter(packed, 4))


def test_segments_sort_unsort_and_pad_roundtrip():
    ids = torch.tensor([3, 1, 3, 3, 1, 7])
    seg = Segments.from_ids(ids)
    assert not seg.identity and seg.order is not None
    x = torch.arange(6.0)[:, None]
    torch.testing.assert_close(seg.unsort(seg.sort(x)), x)
    torch.testing.assert_close(seg.unpad(seg.pad(x)), x)
    assert seg.offsets.tolist() == [0, 2, 5, 6]
    assert Segments.from_ids(torch.tensor([0, 0, 1, 1])).identity


def test_valid_rows_keeps_first_key_only_for_empty_rows():
    valid = torch.tensor([[False, False, False], [False, True, True]])
    assert _valid_rows(valid).tolist() == [[True, False, False], [False, True, True]]


def test_resolve_backend_and_chooser():
    assert resolve_backend("auto", "cpu") == "padded"
    assert resolve_backend("nested", "cpu") == "nested"
    with pytest.raises(ValueError, match="attention backend"):
        resolve_backend("fast", "cpu")
    chooser = BackendChooser(heads=2, head_dim=8, segments=3, segment_len=16, dtype=torch.float32,
                             candidates=("padded", "nested"), repeats=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = chooser.measure("cpu")
    assert best in ("padded", "nested") and set(chooser.timings) == {"padded", "nested"}


def test_bucketed_segments_equal_unbucketed():
    from lay2story_core.attention.packing import bucket_length

    assert [bucket_length(n) for n in (1, 17, 33, 100, 1025)] == [16, 20, 40, 112, 1280]
    gen = torch.Generator().manual_seed(4)
    slots = _slots("two", gen, tokens=40)
    q, k, v = _qkv(gen, tokens=40)
    plain, bucketed = TokenPacking.build(slots, 4), TokenPacking.build(slots, 4, bucket=True)
    assert bucketed.slot_segments.max_len == bucket_length(plain.slot_segments.max_len)
    for segs in ("slot_segments", "group_segments"):
        ours = masked_attention_with(bucketed, segs, q, k, v)
        torch.testing.assert_close(ours, masked_attention_with(plain, segs, q, k, v), atol=1e-6, rtol=1e-5)


def masked_attention_with(packing, name, q, k, v):
    from lay2story_core.attention import segment_attention

    out = segment_attention(packing.gather(q), packing.gather(k), packing.gather(v), getattr(packing, name))
    return packing.scatter(out)
