"""Token-sparse masked attention equals the dense additive-mask reference (forward and gradients), never NaN."""

import pytest
import torch

from lay2story_core.attention import (
    Segments,
    SubjectSlots,
    TokenPacking,
    dense_masked_3d_attention,
    dense_masked_cross_attention,
    dense_masked_self_attention,
    masked_3d_attention,
    masked_cross_attention,
    masked_self_attention,
)

HEADS, DIM = 2, 8


def _masks_case(name: str, frames: int, tokens: int, gen: torch.Generator) -> torch.Tensor:
    if name == "random":
        return torch.rand(frames, tokens, generator=gen) < 0.4
    if name == "full":
        return torch.ones(frames, tokens, dtype=torch.bool)
    if name == "single":
        m = torch.zeros(frames, tokens, dtype=torch.bool)
        m[torch.arange(frames), torch.randint(tokens, (frames,), generator=gen)] = True
        return m
    if name == "mixed":  # empty frame, full frame, single token, partial coverage
        m = torch.zeros(frames, tokens, dtype=torch.bool)
        m[1] = True
        m[2, 3] = True
        m[3, : tokens // 3] = True
        return m
    raise ValueError(name)


def _slots(masks: torch.Tensor, characters: int, gen: torch.Generator) -> SubjectSlots:
    """One slot per (frame, character); characters get disjoint random parts of the frame's mask."""
    frames, tokens = masks.shape
    owner = torch.randint(characters, (frames, tokens), generator=gen)
    all_masks, images, groups = [], [], []
    for f in range(frames):
        for c in range(characters):
            all_masks.append(masks[f] & (owner[f] == c) if characters > 1 else masks[f])
            images.append(f)
            groups.append(c)
    return SubjectSlots(torch.stack(all_masks), torch.tensor(images), torch.tensor(groups))


def _qkv(frames, tokens, gen, dtype=torch.float32):
    return [torch.randn(frames, tokens, HEADS, DIM, generator=gen).to(dtype).requires_grad_() for _ in range(3)]


def _check_same(sparse_fn, dense_fn, inputs, atol=1e-5):
    out_s = sparse_fn(*inputs)
    grads_s = torch.autograd.grad((out_s * torch.linspace(-1, 1, out_s.numel()).view_as(out_s)).sum(), inputs,
                                  allow_unused=True)
    out_d = dense_fn(*inputs)
    grads_d = torch.autograd.grad((out_d * torch.linspace(-1, 1, out_d.numel()).view_as(out_d)).sum(), inputs,
                                  allow_unused=True)
    assert torch.isfinite(out_s).all()
    torch.testing.assert_close(out_s, out_d, atol=atol, rtol=1e-4)
    for gs, gd in zip(grads_s, grads_d):
        gs = torch.zeros_like(gd) if gs is None else gs
        gd = torch.zeros_like(gs) if gd is None else gd
        assert torch.isfinite(gs).all()
        torch.testing.assert_close(gs, gd, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("case", ["random", "full", "single", "mixed"])
@pytest.mark.parametrize("characters", [1, 2])
def test_self_and_3d_attention_match_dense(case, characters):
    gen = torch.Generator().manual_seed(hash((case, characters)) % 2**31)
    frames, tokens = 4, 12
    slots = _slots(_masks_case(case, frames, tokens, gen), characters, gen)
    q, k, v = _qkv(frames, tokens, gen)
    _check_same(lambda a, b, c: masked_self_attention(a, b, c, slots),
                lambda a, b, c: dense_masked_self_attention(a, b, c, slots), [q, k, v])
    _check_same(lambda a, b, c: masked_3d_attention(a, b, c, slots),
                lambda a, b, c: dense_masked_3d_attention(a, b, c, slots), [q, k, v])


@pytest.mark.parametrize("case", ["random", "mixed"])
def test_cross_attention_matches_dense_with_text_padding(case):
    gen = torch.Generator().manual_seed(7)
    frames, tokens, text_len = 4, 10, 6
    slots = _slots(_masks_case(case, frames, tokens, gen), 2, gen)
    q = torch.randn(frames, tokens, HEADS, DIM, generator=gen).requires_grad_()
    k = torch.randn(slots.num_slots, text_len, HEADS, DIM, generator=gen).requires_grad_()
    v = torch.randn(slots.num_slots, text_len, HEADS, DIM, generator=gen).requires_grad_()
    valid = torch.arange(text_len)[None, :] < torch.randint(1, text_len + 1, (slots.num_slots, 1), generator=gen)
    valid[0] = False  # a caption with no valid token must not give NaN
    _check_same(lambda a, b, c: masked_cross_attention(a, b, c, slots, valid),
                lambda a, b, c: dense_masked_cross_attention(a, b, c, slots, valid), [q, k, v])


def test_outside_tokens_are_zero_and_overlaps_are_averaged():
    gen = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 6, dtype=torch.bool)
    masks[0, :3] = True
    slots = SubjectSlots(torch.stack([masks[0], masks[0], masks[1]]), torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]))
    q, k, v = (torch.randn(2, 6, HEADS, DIM, generator=gen) for _ in range(3))
    out = masked_self_attention(q, k, v, slots)
    assert out[0, 3:].abs().max() == 0 and out[1].abs().max() == 0
    single = masked_self_attention(q, k, v, SubjectSlots.one_per_image(masks))
    torch.testing.assert_close(out, single)  # two identical overlapping slots average to one


def test_3d_attention_mixes_frames_but_self_attention_does_not():
    gen = torch.Generator().manual_seed(1)
    masks = torch.ones(2, 4, dtype=torch.bool)
    slots = SubjectSlots.one_per_image(masks)
    q, k, v = (torch.randn(2, 4, HEADS, DIM, generator=gen) for _ in range(3))
    v2 = v.clone()
    v2[1] += 5.0
    assert torch.equal(masked_self_attention(q, k, v, slots)[0], masked_self_attention(q, k, v2, slots)[0])
    assert not torch.allclose(masked_3d_attention(q, k, v, slots)[0], masked_3d_attention(q, k, v2, slots)[0])
    # separate groups (e.g. two stories, or the two CFG halves) never mix
    split = SubjectSlots.one_per_image(masks, torch.tensor([0, 1]))
    assert torch.equal(masked_3d_attention(q, k, v, split)[0], masked_3d_attention(q, k, v2, split)[0])


def test_extra_keys_equal_appending_frames():
    """The read pass of long stories: stored identity tokens as extra keys == attending with those frames present."""
    gen = torch.Generator().manual_seed(2)
    masks = torch.rand(3, 8, generator=gen) < 0.5
    masks[:, 0] = True
    q, k, v = (torch.randn(3, 8, HEADS, DIM, generator=gen) for _ in range(3))
    full = masked_3d_attention(q, k, v, SubjectSlots.one_per_image(masks))
    # frames 0..1 are the stored identity frames; frame 2 reads them
    ids = masks[:2].reshape(-1)
    extra_k = k[:2].reshape(-1, HEADS, DIM)[ids][None]
    extra_v = v[:2].reshape(-1, HEADS, DIM)[ids][None]
    read = masked_3d_attention(q[2:], k[2:], v[2:], SubjectSlots.one_per_image(masks[2:]),
                               extra_key=extra_k, extra_value=extra_v)
    torch.testing.assert_close(read[0], full[2], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_without_nan(dtype):
    gen = torch.Generator().manual_seed(3)
    slots = _slots(_masks_case("mixed", 4, 12, gen), 2, gen)
    q, k, v = _qkv(4, 12, gen, dtype)
    out = masked_3d_attention(q, k, v, slots)
    ref = dense_masked_3d_attention(q.float(), k.float(), v.float(), slots)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert torch.isfinite(q.grad).all()


def test_segments_roundtrip_and_empty():
    ids = torch.tensor([3, 1, 3, 3, 1, 7])
    seg = Segments.from_ids(ids)
    assert seg.num_segments == 3 and seg.max_len == 3 and seg.valid is not None
    x = torch.arange(6.0)[:, None]
    torch.testing.assert_close(seg.unpad(seg.pad(x)), x)
    empty = TokenPacking.build(SubjectSlots.one_per_image(torch.zeros(2, 5, dtype=torch.bool)), 2)
    assert empty.num_tokens == 0
    q = torch.randn(2, 5, HEADS, DIM)
    nobody = SubjectSlots.one_per_image(torch.zeros(2, 5, dtype=torch.bool))
    assert masked_3d_attention(q, q, q, nobody).abs().sum() == 0


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="masks"):
        SubjectSlots(torch.ones(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="image_index"):
        SubjectSlots(torch.ones(2, 3, dtype=torch.bool), torch.zeros(3, dtype=torch.long),
                     torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="query"):
        masked_self_attention(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4),
                              SubjectSlots.one_per_image(torch.ones(2, 3, dtype=torch.bool)))
