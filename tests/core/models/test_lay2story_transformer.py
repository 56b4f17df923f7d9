"""The dual-branch transformer: equal to PixArt when untrained, sparse, savable, checkpointable, any size."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import make_pixart, pixart_inputs, randomise_branch_outputs, subject_inputs

from lay2story_core.attention import SubjectSlots, TokenPacking
from lay2story_core.models import IdentityBank, Lay2StoryTransformer, SubjectBranch, SubjectInputs
from lay2story_core.models.lay2story_transformer import subject_branch_input


@pytest.mark.parametrize("kind", ["alpha512", "alpha1024ms", "sigma"])
def test_untrained_branch_equals_plain_pixart_exactly(kind):
    pixart = make_pixart(kind)
    model = Lay2StoryTransformer(pixart, SubjectBranch.from_transformer(pixart))
    latents, text, mask, t, added = pixart_inputs(pixart, frames=3, h=8, w=12)
    with torch.no_grad():
        ref = pixart(latents, encoder_hidden_states=text, timestep=t, added_cond_kwargs=added,
                     encoder_attention_mask=mask).sample
        out = model(latents, text, t, added, mask, subject=subject_inputs(pixart, 3, 8, 12, refs=1)).sample
        bare = model(latents, text, t, added, mask).sample
    assert torch.equal(out, ref)
    assert torch.equal(bare, ref)


def test_trained_branch_changes_output_and_layout_off_runs(tiny_pixart):
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch)
    latents, text, mask, t, added = pixart_inputs(tiny_pixart, frames=4)
    with torch.no_grad():
        ref = tiny_pixart(latents, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask).sample
        box = model(latents, text, t, added, mask, subject=subject_inputs(tiny_pixart, 4, 8, 8)).sample
        whole = subject_inputs(tiny_pixart, 4, 8, 8, coverage="full")
        full = model(latents, text, t, added, mask, subject=whole).sample
    assert not torch.allclose(box, ref) and not torch.allclose(full, box)
    assert torch.isfinite(full).all()


def test_3d_attention_couples_frames_of_a_story_only(tiny_pixart):
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch).eval()
    latents, text, mask, t, added = pixart_inputs(tiny_pixart, frames=2)
    t = torch.full_like(t, 500)
    subj = subject_inputs(tiny_pixart, 2, 8, 8, coverage="full")
    other = latents.clone()
    other[1] += 1.0
    with torch.no_grad():
        a = model(latents, text, t, added, mask, subject=subj).sample[0]
        b = model(other, text, t, added, mask, subject=subj).sample[0]
        subj.slots = SubjectSlots(subj.slots.masks, subj.slots.image_index, torch.tensor([0, 1]))  # two stories
        c = model(latents, text, t, added, mask, subject=subj).sample[0]
        d = model(other, text, t, added, mask, subject=subj).sample[0]
    assert not torch.allclose(a, b)  # frame 0 sees frame 1 through the 3D attention
    assert torch.equal(c, d)  # ... but not when they belong to different stories


def test_save_and_load_round_trip(tmp_path, tiny_pixart):
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "subject_branch" / "config.json").exists()
    loaded = Lay2StoryTransformer.from_pretrained(tmp_path)
    latents, text, mask, t, added = pixart_inputs(tiny_pixart)
    subj = subject_inputs(tiny_pixart, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents, text, t, added, mask, subject=subj).sample,
                                   model(latents, text, t, added, mask, subject=subj).sample)
    assert loaded.subject_branch.config.num_layers == 2


def test_gradient_checkpointing_gives_same_gradients(tiny_pixart):
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch).train()
    latents, text, mask, t, added = pixart_inputs(tiny_pixart, frames=2)
    subj = subject_inputs(tiny_pixart, 2, 8, 8, refs=1)

    def grads():
        model.zero_grad()
        model(latents, text, t, added, mask, subject=subj).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    model.disable_gradient_checkpointing()
    assert plain.keys() == checkpointed.keys() and any("subject_branch" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], msg=name)


@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("size", [(8, 8), (8, 16), (12, 8)])
def test_any_frame_count_and_non_square(tiny_pixart, frames, size):
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch)
    latents, text, mask, t, added = pixart_inputs(tiny_pixart, frames=frames, h=size[0], w=size[1])
    with torch.no_grad():
        out = model(latents, text, t, added, mask, subject=subject_inputs(tiny_pixart, frames, *size, refs=1)).sample
    assert out.shape == (frames, 8, *size) and torch.isfinite(out).all()


def test_identity_bank_read_equals_joint_generation(tiny_pixart):
    """Frames generated later that read the stored identity keys/values see the identity frames' subject tokens."""
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch).eval()
    latents, text, mask, t, added = pixart_inputs(tiny_pixart, frames=3)
    t = torch.full_like(t, 300)
    subj = subject_inputs(tiny_pixart, 3, 8, 8)
    with torch.no_grad():
        bank = IdentityBank(mode="write")
        ident = subject_inputs(tiny_pixart, 3, 8, 8)
        ident.slots = SubjectSlots(subj.slots.masks[:2], subj.slots.image_index[:2], subj.slots.group_index[:2])
        ident.caption_embeds, ident.caption_mask = subj.caption_embeds[:2], subj.caption_mask[:2]
        ident.reference_latents, ident.reference_masks = subj.reference_latents[:2], subj.reference_masks[:2]
        ident.bank = bank
        model(latents[:2], text[:2], t[:2], added, mask[:2], subject=ident)
        assert len(bank) == len(branch.blocks)
        bank.mode = "read"
        later = SubjectInputs(
            slots=SubjectSlots(subj.slots.masks[2:], torch.tensor([0]), subj.slots.group_index[2:]),
            caption_embeds=subj.caption_embeds[2:], caption_mask=subj.caption_mask[2:],
            reference_latents=subj.reference_latents[2:], reference_masks=subj.reference_masks[2:], bank=bank)
        read = model(latents[2:], text[2:], t[2:], added, mask[2:], subject=later).sample
        later.bank = None
        alone = model(latents[2:], text[2:], t[2:], added, mask[2:], subject=later).sample
    assert not torch.allclose(read, alone)
    assert torch.isfinite(read).all()


def test_mismatched_branch_is_rejected(tiny_pixart):
    other = make_pixart("alpha1024ms")
    with pytest.raises(ValueError, match="subject_branch"):
        Lay2StoryTransformer(tiny_pixart, SubjectBranch.from_transformer(other))


def test_distinct_captions_with_index_equal_one_caption_per_slot(tiny_pixart):
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch).eval()
    latents, text, mask, t, added = pixart_inputs(tiny_pixart, frames=3)
    per_slot = subject_inputs(tiny_pixart, 3, 8, 8)
    per_slot.caption_embeds = per_slot.caption_embeds[[0, 1, 0]]
    per_slot.caption_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    distinct = subject_inputs(tiny_pixart, 3, 8, 8)
    distinct.caption_embeds = per_slot.caption_embeds[:2]
    distinct.caption_mask = per_slot.caption_mask[:2]
    distinct.caption_index = torch.tensor([0, 1, 0])
    with torch.no_grad():
        a = model(latents, text, t, added, mask, subject=per_slot).sample
        b = model(latents, text, t, added, mask, subject=distinct).sample
    torch.testing.assert_close(a, b)


# -- SubjectBranch.forward: per-block residuals like diffusers' ControlNets, scaled per story or per slot ---------
def _branch_call(model, subject, latents, t, scale=1.0):
    pixart = model.transformer
    temb = pixart.adaln_single(t, None, batch_size=latents.shape[0], hidden_dtype=latents.dtype)[0]
    x, _, _ = subject_branch_input(latents, subject)
    packing = TokenPacking.build(subject.slots, x.shape[0])
    caption = pixart.caption_projection(subject.caption_embeds)
    return model.subject_branch(x, temb, caption, subject.caption_mask.bool(), packing, subject_scale=scale)


def _randomised_model():
    """An alpha-512 dual-branch model whose branch has non-zero outputs, with inputs for a 2-frame call."""
    pixart = make_pixart("alpha512")
    branch = SubjectBranch.from_transformer(pixart)
    randomise_branch_outputs(branch)
    latents, _, _, t, _ = pixart_inputs(pixart)
    return Lay2StoryTransformer(pixart, branch).eval(), branch, latents, t, subject_inputs(pixart, 2, 8, 8)


def test_one_residual_per_block_after_global_block_2k_plus_1_and_linear_in_the_scale():
    model, branch, latents, t, subject = _randomised_model()
    with torch.no_grad():
        full = _branch_call(model, subject, latents, t)
        half = _branch_call(model, subject, latents, t, scale=0.5)
        off = _branch_call(model, subject, latents, t, scale=0.0)
    assert full.injection_layers == (1, 3) and len(full.block_residuals) == 2
    assert all(r.shape == (full.packing.num_tokens, branch.inner_dim) for r in full.block_residuals)
    assert all(float(r.abs().max()) > 0 for r in full.block_residuals)
    for a, b, z in zip(full.block_residuals, half.block_residuals, off.block_residuals):
        torch.testing.assert_close(b, 0.5 * a)
        assert float(z.abs().max()) == 0.0


def test_per_slot_scale_scales_only_that_slots_tokens():
    model, branch, latents, t, subject = _randomised_model()
    with torch.no_grad():
        full = _branch_call(model, subject, latents, t)
        per_slot = _branch_call(model, subject, latents, t, scale=torch.tensor([0.0, 2.0]))
    slot = full.packing.token_slot
    for a, b in zip(full.block_residuals, per_slot.block_residuals):
        assert float(b[slot == 0].abs().max()) == 0.0
        torch.testing.assert_close(b[slot == 1], 2.0 * a[slot == 1])


def test_prepared_packing_and_captions_give_the_same_output():
    pixart = make_pixart("alpha1024ms")
    branch = SubjectBranch.from_transformer(pixart)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(pixart, branch).eval()
    latents, text, mask, t, added = pixart_inputs(pixart)
    subject = subject_inputs(pixart, 2, 8, 8, refs=1)
    prepared = dataclasses.replace(subject, packing=TokenPacking.build(subject.slots, 3),
                                   caption_states=pixart.caption_projection(subject.caption_embeds))
    with torch.no_grad():
        a = model(latents, text, t, added, mask, subject=subject).sample
        b = model(latents, text, t, added, mask, subject=prepared).sample
        plain = model(latents, text, t, added, mask).sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float((a - plain).abs().max()) > 1e-4
