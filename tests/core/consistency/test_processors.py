"""Training-free consistency: clean install/removal, plain when off, deterministic sharing, write/read == joint."""

from __future__ import annotations

import pytest
import torch

from lay2story_core.attention import SubjectSlots, TokenPacking
from lay2story_core.consistency import (
    ConsistencyConfig,
    StoryConsistencyContext,
    identity_flags,
    story_consistency_processors,
)


def _call(pixart, latents, text, t, ctx=None):
    kwargs = None if ctx is None else {"story_consistency": ctx}
    with torch.no_grad():
        return pixart(latents, encoder_hidden_states=text, timestep=t, cross_attention_kwargs=kwargs).sample


def _inputs(pixart, frames=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(frames, 4, 8, 8, generator=gen),
            torch.randn(frames, 5, pixart.config.caption_channels, generator=gen),
            torch.full((frames,), 400))


def _ctx(frames, identity, step=3, **cfg):
    cfg.setdefault("blocks", (1, 2, 3))
    return StoryConsistencyContext(ConsistencyConfig(**cfg), group=torch.zeros(frames, dtype=torch.long),
                                   identity=identity_flags(frames, identity), step=step)


def test_processors_install_and_restore(tiny_pixart):
    before = dict(tiny_pixart.attn_processors)
    latents, text, t = _inputs(tiny_pixart)
    plain = _call(tiny_pixart, latents, text, t)
    with story_consistency_processors(tiny_pixart):
        assert all(type(p).__name__.endswith("Processor") for p in tiny_pixart.attn_processors.values())
        torch.testing.assert_close(_call(tiny_pixart, latents, text, t), plain)  # no context: plain
        torch.testing.assert_close(_call(tiny_pixart, latents, text, t, _ctx(3, [0, 1], step=0)), plain)  # step 0
        torch.testing.assert_close(_call(tiny_pixart, latents, text, t, _ctx(3, [0, 1], rate=0.0)), plain)
        shared = _call(tiny_pixart, latents, text, t, _ctx(3, [0, 1, 2]))
    assert not torch.allclose(shared, plain)
    assert {k: type(v) for k, v in tiny_pixart.attn_processors.items()} == {k: type(v) for k, v in before.items()}


def test_sharing_is_deterministic_per_seed_and_stays_within_a_story(tiny_pixart):
    latents, text, t = _inputs(tiny_pixart)
    with story_consistency_processors(tiny_pixart):
        a = _call(tiny_pixart, latents, text, t, _ctx(3, [0, 1, 2], seed=1))
        b = _call(tiny_pixart, latents, text, t, _ctx(3, [0, 1, 2], seed=1))
        c = _call(tiny_pixart, latents, text, t, _ctx(3, [0, 1, 2], seed=2, rate=0.3))
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)
        ctx = _ctx(3, [0, 1, 2])
        ctx.group = torch.tensor([0, 1, 2])  # three separate stories: nothing is shared
        torch.testing.assert_close(_call(tiny_pixart, latents, text, t, ctx), _call(tiny_pixart, latents, text, t))


def test_subject_only_sharing_uses_masks(tiny_pixart):
    latents, text, t = _inputs(tiny_pixart)
    masks = torch.zeros(3, 16, dtype=torch.bool)
    masks[:, :4] = True
    with story_consistency_processors(tiny_pixart):
        sub_ctx = _ctx(3, [0, 1, 2], rate=1.0)
        sub_ctx.subject_masks = masks
        sub = _call(tiny_pixart, latents, text, t, sub_ctx)
        full_ctx = _ctx(3, [0, 1, 2], rate=1.0, subject_only=False)
        full_ctx.subject_masks = masks
        full = _call(tiny_pixart, latents, text, t, full_ctx)
        plain = _call(tiny_pixart, latents, text, t)
    assert not torch.allclose(sub, full) and not torch.allclose(sub, plain)


def test_write_then_read_equals_joint_generation(tiny_pixart):
    """StoryDiffusion's long-story scheme: identity frames write, a later frame reads == all frames in one call."""
    latents, text, t = _inputs(tiny_pixart, frames=3)
    with story_consistency_processors(tiny_pixart):
        joint = _call(tiny_pixart, latents, text, t, _ctx(3, [0, 1]))
        write = _ctx(2, [0, 1])
        write.mode = "write"
        ident = _call(tiny_pixart, latents[:2], text[:2], t[:2], write)
        read = _ctx(1, [])
        read.mode, read.bank = "read", write.bank
        later = _call(tiny_pixart, latents[2:], text[2:], t[2:], read)
    assert len(write.bank) == 3  # one entry per consistent block at this step
    torch.testing.assert_close(ident, joint[:2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(later, joint[2:], atol=1e-5, rtol=1e-4)


def test_regional_cross_attention_routes_box_tokens_to_subject_caption(tiny_pixart):
    attn = tiny_pixart.transformer_blocks[0].attn2
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 16, tiny_pixart.inner_dim, generator=gen)
    context = torch.randn(2, 5, tiny_pixart.inner_dim, generator=gen)
    masks = torch.zeros(1, 16, dtype=torch.bool)
    masks[0, :6] = True
    packing = TokenPacking.build(SubjectSlots.one_per_image(masks), 1)  # only the conditional frame 0
    caption = torch.randn(1, 4, tiny_pixart.inner_dim, generator=gen)
    with story_consistency_processors(tiny_pixart):
        ctx = _ctx(2, [])
        plain = attn(hidden, encoder_hidden_states=context)
        ctx.regional = (packing, caption, None)
        regional = attn(hidden, encoder_hidden_states=context, story_consistency=ctx)
    assert torch.equal(regional[0, 6:], plain[0, 6:]) and torch.equal(regional[1], plain[1])
    assert not torch.allclose(regional[0, :6], plain[0, :6])


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="rate"):
        ConsistencyConfig(rate=1.5)
    with pytest.raises(ValueError, match="blocks"):
        ConsistencyConfig(blocks=(9,)).active_blocks(4)
    with pytest.raises(ValueError, match="blocks: expected block indices, None or 'all', got 'some'"):
        ConsistencyConfig(blocks="some")


def test_block_choices():
    assert ConsistencyConfig().active_blocks(8) == (4, 5, 6, 7)  # StoryDiffusion: the second half
    assert ConsistencyConfig(blocks="all").active_blocks(8) == tuple(range(8))
    assert ConsistencyConfig(blocks=(0, 3)).active_blocks(8) == (0, 3)


def test_user_settings_parse_to_one_config_and_errors_name_the_field():
    assert ConsistencyConfig.from_user(0.5, "second_half") == ConsistencyConfig()
    assert ConsistencyConfig.from_user(1, " ALL ").blocks == "all"
    assert ConsistencyConfig.from_user(0.0, "5, 1,1").blocks == (1, 5)
    assert ConsistencyConfig.from_user(0.2, "").blocks is None
    for rate, blocks, field in ((1.5, "all", "rate_in"), (True, "all", "rate_in"), (0.5, "1;2", "blocks_in"),
                                (0.5, "-1", "blocks_in"), (0.5, None, "blocks_in")):
        with pytest.raises(ValueError, match=f"^{field}: "):
            ConsistencyConfig.from_user(rate, blocks, rate_field="rate_in", blocks_field="blocks_in")
    with pytest.raises(ValueError, match="^blocks_in: \\[9\\] out of range"):
        ConsistencyConfig(blocks=(1, 9)).active_blocks(8, field="blocks_in")


def test_readers_restrict_which_tokens_attend_to_the_shared_ones(tiny_pixart):
    """Box control's ``readers``: only those tokens see the identity frames' shared tokens; the others attend to
    their own frame, as plain self-attention; ``None`` (every token reads) is the behaviour without box control."""
    attn = tiny_pixart.transformer_blocks[1].attn1
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(3, 16, tiny_pixart.inner_dim, generator=gen)
    with story_consistency_processors(tiny_pixart):
        plain = attn(hidden)
        shared = attn(hidden, story_consistency=_ctx(3, [0, 1, 2], rate=1.0))
        everyone = _ctx(3, [0, 1, 2], rate=1.0)
        everyone.readers = torch.ones(3, 16, dtype=torch.bool)
        torch.testing.assert_close(attn(hidden, story_consistency=everyone), shared)
        some = _ctx(3, [0, 1, 2], rate=1.0)
        some.readers = torch.zeros(3, 16, dtype=torch.bool)
        some.readers[:, :5] = True
        out = attn(hidden, story_consistency=some)
    torch.testing.assert_close(out[:, 5:], plain[:, 5:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, :5], shared[:, :5], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(shared[:, 5:], plain[:, 5:])
