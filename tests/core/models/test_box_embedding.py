"""The subject branch's box embedding: token positions in their boxes, warm start, training and saving."""

from __future__ import annotations

import pytest
import torch
from tiny_models import pixart_inputs, randomise_branch_outputs, subject_inputs

from lay2story_core.attention import SubjectSlots, TokenPacking
from lay2story_core.conditioning import FrameSpec, plan_subject_slots
from lay2story_core.models import Lay2StoryTransformer, SubjectBranch
from lay2story_core.story import ResolvedSubject


def test_box_positions_of_a_continuous_box():
    # a 4x4 grid; the box covers x 0.3-0.8, y 0.1-0.6 -> token centres 0.375, 0.625 inside on both axes
    box = (0.3, 0.1, 0.8, 0.6)
    plan = plan_subject_slots([FrameSpec(0, (ResolvedSubject("a", 0, box, "the a", True, True),))], 8, 8, 2)
    torch.testing.assert_close(plan.slots.boxes, torch.tensor([box]))
    packing = TokenPacking.build(plan.slots, 1)
    pos = packing.box_positions(4, 4)
    token = packing.token_index
    cx, cy = (token % 4 + 0.5) / 4, (token // 4 + 0.5) / 4
    torch.testing.assert_close(pos[:, 0], (cx - 0.3) / 0.5)
    torch.testing.assert_close(pos[:, 1], (cy - 0.1) / 0.5)
    torch.testing.assert_close(pos[:, 2:], torch.tensor([[0.5, 0.5]]).expand(len(token), 2))
    assert ((pos[:, :2] > 0) & (pos[:, :2] < 1)).all()


def test_box_positions_of_free_masks_use_the_cells_bounding_box():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 1:3, 0:2] = True  # rows 1-2, cols 0-1
    masks[1, 0, 3] = True  # one cell
    packing = TokenPacking.build(SubjectSlots.one_per_image(masks.view(2, -1)), 2)
    pos = packing.box_positions(4, 4)
    first = packing.token_slot == 0
    assert sorted(set(pos[first, 0].tolist())) == [0.25, 0.75] and sorted(set(pos[first, 1].tolist())) == [0.25, 0.75]
    torch.testing.assert_close(pos[first, 2:], torch.tensor([[0.5, 0.5]]).expand(int(first.sum()), 2))
    torch.testing.assert_close(pos[~first], torch.tensor([[0.5, 0.5, 0.25, 0.25]]))


def test_boxes_must_match_the_slots():
    with pytest.raises(ValueError, match="SubjectSlots.boxes"):
        SubjectSlots(torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, dtype=torch.long),
                     torch.zeros(2, dtype=torch.long), torch.zeros(3, 4))


def _call(model, subject, seed=0):
    latents, text, mask, t, added = pixart_inputs(model.transformer, frames=2, seed=seed)
    with torch.no_grad():
        return model(latents, text, t, added, mask, subject=subject).sample


def test_with_box_embedding_keeps_a_trained_branch_exact_until_trained(tiny_pixart):
    branch = SubjectBranch.from_transformer(tiny_pixart)
    randomise_branch_outputs(branch)
    boxed = branch.with_box_embedding()
    assert boxed.config.box_embedding and not branch.config.box_embedding and boxed.with_box_embedding() is boxed
    subject = subject_inputs(tiny_pixart, 2, 8, 8)
    before = _call(Lay2StoryTransformer(tiny_pixart, branch), subject)
    torch.testing.assert_close(_call(Lay2StoryTransformer(tiny_pixart, boxed), subject), before, rtol=0, atol=0)
    with torch.no_grad():  # a trained box embedding moves the output, and only through the subject tokens
        boxed.box_embed.linear_2.weight.normal_(std=0.5)
    after = _call(Lay2StoryTransformer(tiny_pixart, boxed), subject)
    assert (after - before).abs().max() > 1e-3


def test_box_embedding_is_trained_and_saved(tmp_path, tiny_pixart):
    branch = SubjectBranch.from_transformer(tiny_pixart, box_embedding=True)
    randomise_branch_outputs(branch)
    model = Lay2StoryTransformer(tiny_pixart, branch)
    latents, text, mask, t, added = pixart_inputs(tiny_pixart, frames=2)
    subject = subject_inputs(tiny_pixart, 2, 8, 8)
    model(latents, text, t, added, mask, subject=subject).sample.square().mean().backward()
    assert branch.box_embed.linear_2.weight.grad.abs().sum() > 0  # zero-initialised, but it learns
    with torch.no_grad():
        branch.box_embed.linear_2.weight.normal_(std=0.5)
    branch.save_pretrained(tmp_path)
    loaded = SubjectBranch.from_pretrained(tmp_path)
    assert loaded.config.box_embedding
    torch.testing.assert_close(_call(Lay2StoryTransformer(tiny_pixart, loaded), subject),
                               _call(Lay2StoryTransformer(tiny_pixart, branch), subject))


def test_a_box_smaller_than_a_cell_counts_as_one_cell():
    box = (0.30, 0.30, 0.3001, 0.3002)  # inside cell (1, 1) of a 4x4 grid, far narrower than it
    plan = plan_subject_slots([FrameSpec(0, (ResolvedSubject("a", 0, box, "the a", True, True),))], 8, 8, 2)
    packing = TokenPacking.build(plan.slots, 1)
    pos = packing.box_positions(4, 4)
    assert packing.num_tokens == 1 and ((pos[:, :2] >= 0) & (pos[:, :2] <= 1)).all()
    torch.testing.assert_close(pos[:, 2:], torch.tensor([[0.25, 0.25]]))


def test_box_embedding_in_half_precision_keeps_its_frequencies():
    from lay2story_core.models.subject_branch import BoxEmbedding

    embed = BoxEmbedding(16)
    with torch.no_grad():
        embed.linear_2.weight.normal_(std=0.5)
    positions = torch.rand(32, 4)
    reference = embed(positions)
    half = embed.to(torch.bfloat16)(positions).float()  # box_positions are fp32 whatever the model dtype
    torch.testing.assert_close(half, reference, atol=0.05, rtol=0.05)  # bf16 rounding only, no phase drift
