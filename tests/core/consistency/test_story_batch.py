"""The host-independent story attention: ``consistent_self_attention`` equals its dense reference on arbitrary q/k/v,
and ``StoryBatch`` maps a host's batched calls (chunks x frames, step, token grid) onto contexts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lay2story_core.consistency import (
    ConsistencyConfig,
    StoryBatch,
    StoryConsistencyContext,
    consistent_self_attention,
    dense_consistent_self_attention,
    step_index,
    token_grid,
)
from lay2story_core.story import Story


def _story(boxes: bool = True) -> Story:
    frames = [{"prompt": f"scene {i}"} for i in range(5)]
    if boxes:
        frames[0]["subjects"] = [{"character": "fox", "box": [0.0, 0.0, 0.5, 0.5], "caption": "a fox sitting"}]
        frames[1]["subjects"] = [{"character": "fox", "box": [0.5, 0.25, 1.0, 1.0]},
                                 {"character": "cat", "box": [0.0, 0.5, 0.5, 1.0], "caption": "a cat asleep"}]
        frames[3]["subjects"] = [{"character": "cat", "box": [0.25, 0.25, 0.75, 0.75]}]
    return Story.from_dict({"version": 1, "width": 64, "height": 64,
                            "characters": [{"id": "fox", "identity": "a red fox"},
                                           {"id": "cat", "identity": "a blue cat"}],
                            "frames": frames})


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("boxes", [False, True])
@pytest.mark.parametrize("rate", [0.3, 1.0])
def test_sparse_equals_dense_reference(boxes, rate):
    batch = StoryBatch(_story(boxes), ConsistencyConfig(rate=rate, blocks="all", seed=4), identity_frames=3)
    grid = (4, 6)
    ctx = batch.context(chunks=2, step=3, grid=grid)
    torch.manual_seed(0)
    q, k, v = (torch.randn(10, 24, 2, 8) for _ in range(3))
    out = consistent_self_attention(q, k, v, ctx, block=1)
    ref = dense_consistent_self_attention(q, k, v, ctx, block=1)
    assert out is not None and out.shape == q.shape
    assert _rel(out, ref) < 1e-5
    # plain attention for comparison: the non-identity frames 3, 4 of each chunk read the identity frames
    plain = torch.nn.functional.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    assert _rel(out[3], plain[3]) > 1e-3


def test_readers_restrict_who_reads_shared_tokens():
    """A host with text tokens in the sequence (FLUX): only the readers (image tokens) see shared tokens."""
    batch = StoryBatch(_story(False), ConsistencyConfig(rate=1.0, blocks="all"), identity_frames=2)
    ctx = batch.context(chunks=1, step=2, grid=(2, 4))
    readers = torch.ones(5, 8, dtype=torch.bool)
    readers[:, :3] = False
    ctx = dataclasses.replace(ctx, readers=readers)
    torch.manual_seed(1)
    q, k, v = (torch.randn(5, 8, 1, 4) for _ in range(3))
    out = consistent_self_attention(q, k, v, ctx, block=0)
    ref = dense_consistent_self_attention(q, k, v, ctx, block=0)
    plain = torch.nn.functional.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v))).transpose(1, 2)
    assert _rel(out, ref) < 1e-5
    assert torch.allclose(out[:, :3], plain[:, :3], atol=1e-6)  # non-readers: plain attention
    assert _rel(out[:, 3:], plain[:, 3:]) > 1e-3


def test_rate_zero_shares_nothing():
    batch = StoryBatch(_story(), ConsistencyConfig(rate=0.0, blocks="all"))
    ctx = batch.context(chunks=2, step=5, grid=(4, 4))
    q = torch.randn(10, 16, 2, 4)
    assert consistent_self_attention(q, q, q, ctx, block=0) is None


def test_context_groups_identity_and_masks():
    batch = StoryBatch(_story(), ConsistencyConfig(), identity_frames=2)
    ctx = batch.context(chunks=2, step=7, grid=(4, 4))
    assert ctx.step == 7
    assert ctx.group.tolist() == [0] * 5 + [1] * 5
    assert ctx.identity.tolist() == [True, True, False, False, False] * 2
    masks = ctx.subject_masks.view(10, 4, 4)
    assert masks[0, :2, :2].all() and masks[0].sum() == 4  # frame 0: the fox's box, top-left quarter
    assert masks[2].all()  # frame 2 has no subjects: every character, full frame
    assert torch.equal(masks[:5], masks[5:])  # the unconditional chunk shares the same boxes
    assert StoryBatch(_story(False), ConsistencyConfig()).context(1, 0, (4, 4)).subject_masks is None


def test_caption_regions_read_their_character_alone_in_the_frame():
    """A captioned box reads its character's identity and the frame prompt (the other characters left out), not the
    subject caption; an uncaptioned box (the fox in frame 1, the cat in frame 3) is not a region."""
    batch = StoryBatch(_story(), ConsistencyConfig())
    assert batch.region_captions() == ["a red fox, scene 0", "a blue cat, scene 1"]
    regions = batch.caption_regions((4, 4))
    assert [[c for c, _ in frame] for frame in regions] == [["a red fox, scene 0"], ["a blue cat, scene 1"], [], [],
                                                            []]
    assert batch.story.global_caption(1) == "a red fox, a blue cat, scene 1"  # what the cat's box no longer reads
    assert regions[1][0][1].view(4, 4)[2:, :2].all() and regions[1][0][1].sum() == 4


def test_bad_batch_and_identity_frames_name_the_field():
    batch = StoryBatch(_story(), ConsistencyConfig())
    assert batch.chunks_of(10) == 2
    with pytest.raises(ValueError, match=r"^latent_image: a batch of 7 .* 5 frames"):
        batch.chunks_of(7, "latent_image")
    with pytest.raises(ValueError, match="identity_frames"):
        StoryBatch(_story(), ConsistencyConfig(), identity_frames=6)


@pytest.mark.parametrize(("shape", "tokens", "grid"), [
    ((64, 64), 4096, (64, 64)), ((64, 64), 256, (16, 16)), ((96, 64), 384, (24, 16)), ((13, 9), 35, (7, 5)),
    ((13, 9), 12, (4, 3)),
])
def test_token_grid(shape, tokens, grid):
    assert token_grid(*shape, tokens) == grid


def test_token_grid_rejects_foreign_tokens():
    with pytest.raises(ValueError, match="latent"):
        token_grid(64, 64, 77)


def test_step_index():
    sigmas = torch.tensor([14.6, 7.0, 3.1, 1.2, 0.0])
    assert step_index(torch.tensor([3.1, 3.1]), sigmas) == 2
    assert step_index(14.6, sigmas) == 0
    assert step_index(None, sigmas) == 0


def test_uses_consistency_with_host_active_sites():
    ctx = StoryConsistencyContext(ConsistencyConfig(start_step=1), torch.zeros(2), torch.ones(2, dtype=torch.bool),
                                  step=1)
    assert ctx.uses_consistency(1, 4, active=(1,)) and not ctx.uses_consistency(2, 4, active=(1,))
    assert ctx.uses_consistency(3, 4) and not ctx.uses_consistency(1, 4)  # default: the second half
    ctx.step = 0
    assert not ctx.uses_consistency(1, 4, active=(1,))
