"""Step inputs: dropout semantics (CFG, layout, subject captions), one timestep per story, reproducibility."""

from __future__ import annotations

import pytest
import torch

from lay2story_core.conditioning import FrameSpec
from lay2story_core.story import Box, rasterize_boxes
from training.buckets import BucketTable
from training.dataset import StoryDataset, StoryIndex, collate_examples
from training.features import (
    OUTLINE_DETAIL_CAP,
    CaptionEncoder,
    DropoutConfig,
    compute_loss,
    outline_loss_weights,
    prepare_inputs,
)
from training.losses import GaussianDiffusion
from training.modeling import load_components


@pytest.fixture(scope="module")
def setup(tiny_assets, tmp_path_factory):
    from training.train import parse_args

    args = parse_args(["--stage", "2", "--pretrained_model_name_or_path", tiny_assets["model"], "--train_data",
                       tiny_assets["train"], "--output_dir", str(tmp_path_factory.mktemp("o")), "--max_length", "24"])
    components = load_components(args, torch.device("cpu"), "no", need_text=True, need_vae=True)
    table = BucketTable(32, multiple=8)
    dataset = StoryDataset(StoryIndex([tiny_assets["train"]], table), max_frames=6)
    batch = collate_examples([dataset[0], dataset[1]])
    captions = CaptionEncoder(24, tokenizer=components.tokenizer, text_encoder=components.text_encoder)
    return components, batch, captions


def _inputs(setup, dropout, seed=0, stage=2, **kwargs):
    components, batch, captions = setup
    return prepare_inputs(batch, stage=stage, captions=captions, vae=components.vae, vae_info=components.vae_info,
                          diffusion=GaussianDiffusion(1000), generator=torch.Generator().manual_seed(seed),
                          dropout=dropout, patch_size=2, device=torch.device("cpu"), **kwargs)


def _encode(setup, texts):
    components, batch, captions = setup
    return captions(texts, batch)[0]


def test_no_dropout_gives_boxes_subject_captions_and_references(setup):
    _, batch, _ = setup
    inputs = _inputs(setup, DropoutConfig.off())
    frames = batch.num_frames
    slots = inputs.subject.slots
    assert slots.num_slots == frames + 2  # one subject per frame + one reference per story
    assert (slots.masks[:frames].sum(1) < slots.masks.shape[1]).any()  # real boxes, not all full-frame
    stories = [e.story for e in batch.examples]
    expected = [s.frames[i].subjects[0].caption for s in stories for i in range(s.num_frames)]
    torch.testing.assert_close(inputs.subject.caption_embeds[:frames], _encode(setup, expected))
    globals_ = [s.global_caption(i) for s in stories for i in range(s.num_frames)]
    torch.testing.assert_close(inputs.captions, _encode(setup, globals_))
    assert inputs.subject.reference_latents.abs().sum() > 0 and inputs.unconditional == [False, False]
    # one timestep per story: its frames are denoised jointly
    t = inputs.timesteps.tolist()
    assert all(t[f] == t[batch.frame_story.index(s)] for f, s in enumerate(batch.frame_story))


def test_caption_dropout_makes_stories_unconditional_without_subject_branch(setup):
    _, batch, _ = setup
    inputs = _inputs(setup, DropoutConfig(1.0, 0.0, 0.0))
    assert inputs.unconditional == [True, True] and inputs.subject is None
    torch.testing.assert_close(inputs.captions, _encode(setup, [""] * batch.num_frames))


def test_mask_and_subject_caption_dropout(setup):
    _, batch, _ = setup
    frames = batch.num_frames
    full = _inputs(setup, DropoutConfig(0.0, 1.0, 0.0)).subject
    assert full.slots.masks[:frames].all()  # every frame's subject covers the whole frame
    swapped = _inputs(setup, DropoutConfig(0.0, 0.0, 1.0)).subject
    stories = [e.story for e in batch.examples]
    globals_ = [s.global_caption(i) for s in stories for i in range(s.num_frames)]
    torch.testing.assert_close(swapped.caption_embeds[:frames], _encode(setup, globals_))


def test_reference_dropout_trains_some_stories_without_their_reference(setup):
    kept = _inputs(setup, DropoutConfig(0.0, 0.0, 0.0, 0.0))
    dropped = _inputs(setup, DropoutConfig(0.0, 0.0, 0.0, 1.0))
    assert kept.subject.reference_images is not None and kept.subject.reference_images.shape[0] > 0
    assert dropped.subject is not None and dropped.subject.reference_images is None
    torch.testing.assert_close(dropped.x_t, kept.x_t)  # the other draws do not move


def test_same_generator_state_gives_the_same_step_and_stage1_has_no_subject(setup):
    a, b = _inputs(setup, DropoutConfig()), _inputs(setup, DropoutConfig())
    assert torch.equal(a.x_t, b.x_t) and torch.equal(a.timesteps, b.timesteps)
    assert not torch.equal(a.x_t, _inputs(setup, DropoutConfig(), seed=1).x_t)
    assert _inputs(setup, DropoutConfig.off(), stage=1).subject is None


@pytest.mark.parametrize("stage", [1, 2])
def test_timestep_range_default_draws_as_before_and_the_range_is_respected(setup, stage):
    _, batch, _ = setup
    default = _inputs(setup, DropoutConfig(), stage=stage)
    # the draws before this option: the same generator calls in the same order
    generator = torch.Generator().manual_seed(0)
    stories, frames = len(batch.examples), batch.num_frames
    for n in (stories, frames, frames):
        torch.rand(n, generator=generator)
    old_t = torch.randint(0, 1000, (frames if stage == 1 else stories,), generator=generator)
    if stage == 2:
        old_t = old_t[torch.tensor(batch.frame_story)]
    assert torch.equal(default.timesteps, old_t)
    full = _inputs(setup, DropoutConfig(), stage=stage, timestep_range=(0, 1000))
    assert torch.equal(full.timesteps, default.timesteps) and torch.equal(full.x_t, default.x_t)
    for seed in range(20):
        t = _inputs(setup, DropoutConfig(), seed=seed, stage=stage, timestep_range=(300, 310)).timesteps
        assert ((t >= 300) & (t < 310)).all()
    narrow = _inputs(setup, DropoutConfig(), stage=stage, timestep_range=(300, 301))
    assert (narrow.timesteps == 300).all() and torch.equal(narrow.noise, default.noise)  # later draws unmoved


def test_branch_off_stories_train_the_global_branch_alone_at_their_own_timesteps(setup):
    """--branch_off_share: 0 draws exactly as before; a branch-off story keeps its caption but gets no subject slots
    (the global branch alone, as mode='none' samples it) and a timestep from --branch_off_timestep_range."""
    _, batch, _ = setup
    keep = DropoutConfig(0.0, 0.0, 0.0, 0.0)
    before = _inputs(setup, keep)
    same = _inputs(setup, DropoutConfig(0.0, 0.0, 0.0, 0.0, 0.0), branch_off_timestep_range=(300, 301))
    for name in ("timesteps", "x_t", "noise", "captions"):
        assert torch.equal(getattr(same, name), getattr(before, name)), name
    assert torch.equal(same.subject.slots.masks, before.subject.slots.masks)
    off = _inputs(setup, DropoutConfig(0.0, 0.0, 0.0, 0.0, 1.0), branch_off_timestep_range=(300, 301))
    assert off.subject is None and (off.timesteps == 300).all()
    assert torch.equal(off.captions, before.captions) and torch.equal(off.noise, before.noise)
    # some stories off, some on (seeds where the draw splits the batch): only the others keep their slots
    split = [_inputs(setup, DropoutConfig(0.0, 0.0, 0.0, 0.0, 0.5), seed=seed, branch_off_timestep_range=(300, 301))
             for seed in range(12)]
    mixed = [x for x in split if x.subject is not None and (x.timesteps == 300).any() and (x.timesteps != 300).any()]
    assert mixed, "no seed split the batch"
    for x in mixed:
        off_frames = (x.timesteps == 300).nonzero().flatten().tolist()
        assert not set(x.subject.slots.image_index.tolist()) & set(off_frames)


def test_loss_is_finite_and_per_frame(setup):
    components, batch, _ = setup
    inputs = _inputs(setup, DropoutConfig.off())
    losses = compute_loss(components.model, inputs, GaussianDiffusion(1000))
    assert losses.loss.shape == (batch.num_frames,) and torch.isfinite(losses.loss).all()
    losses.loss.mean().backward()
    branch_grads = [p.grad for p in components.model.subject_branch.parameters() if p.grad is not None]
    assert branch_grads and all(p.grad is None for p in components.model.transformer.parameters())


def test_subject_loss_weight_weights_the_given_boxes_only(setup):
    _, batch, _ = setup
    plain, weighted = _inputs(setup, DropoutConfig.off()), _inputs(setup, DropoutConfig.off(), subject_loss_weight=3.0)
    assert plain.loss_weight is None and torch.equal(plain.x_t, weighted.x_t)  # no extra draws
    h, w = plain.x_t.shape[-2:]
    stories = [e.story for e in batch.examples]
    boxes = [[s.box for s in story.frames[i].subjects] for story in stories for i in range(story.num_frames)]
    expected = torch.ones(batch.num_frames, 1, h, w)
    for f, frame_boxes in enumerate(boxes):
        expected[f, 0][rasterize_boxes(frame_boxes, h, w).any(0)] = 3.0
    assert torch.equal(weighted.loss_weight, expected) and (expected == 3.0).any() and (expected == 1.0).any()
    layout_off = _inputs(setup, DropoutConfig(0.0, 1.0, 0.0), subject_loss_weight=3.0)
    assert torch.equal(layout_off.loss_weight, torch.ones_like(expected))  # full-frame boxes are not given boxes


def test_weighted_loss_is_the_weighted_mean_and_uniform_weights_change_nothing(setup):
    components, _, _ = setup
    diffusion = GaussianDiffusion(1000, prediction_type="v_prediction")
    inputs = _inputs(setup, DropoutConfig.off(), subject_loss_weight=4.0)
    with torch.no_grad():
        output = components.model(inputs.x_t, inputs.captions, inputs.timesteps, None, inputs.caption_mask,
                                  subject=inputs.subject).sample
    args = (output, inputs.x_start, inputs.x_t, inputs.timesteps, inputs.noise)
    plain, weighted = diffusion.training_losses(*args), diffusion.training_losses(*args, weight=inputs.loss_weight)
    uniform = diffusion.training_losses(*args, weight=torch.full_like(inputs.loss_weight, 2.5))
    torch.testing.assert_close(uniform.mse, plain.mse)
    pred = output[:, : inputs.x_start.shape[1]]
    err = (diffusion.v_target(inputs.x_start, inputs.timesteps, inputs.noise) - pred) ** 2
    wt = inputs.loss_weight.expand_as(err)
    torch.testing.assert_close(weighted.mse, (wt * err).sum((1, 2, 3)) / wt.sum((1, 2, 3)))
    torch.testing.assert_close(weighted.vb, plain.vb)
    assert not torch.allclose(weighted.mse, plain.mse)
    torch.testing.assert_close(compute_loss(components.model, inputs, diffusion).mse, weighted.mse)


class _Subject:
    def __init__(self, box, has_box=True):
        self.box, self.has_box = Box(box), has_box


def test_outline_weights_stress_a_characters_corners_and_edges_not_its_flat_inside():
    # a flat square character (latent value 1 on rows / columns 4..11) on a flat background, its box given
    x = torch.zeros(1, 4, 16, 16)
    x[..., 4:12, 4:12] = 1.0
    weights = outline_loss_weights(x, [FrameSpec(0, (_Subject((0.125, 0.125, 0.875, 0.875)),))], 2.0)[0, 0]
    corner, edge, inside, background = weights[4, 4], weights[4, 7], weights[7, 7], weights[1, 1]
    assert corner > edge > inside and inside == 1.0 and background == 1.0  # flat pixels keep the plain weight
    assert weights.max() == corner and weights[11, 11] == corner  # all four corners alike
    # the formula: 1 + w * d / mean over the box of d, d the distance from the 3 x 3 neighbourhood's mean
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")[0]
    detail = torch.zeros(16, 16)
    for i in range(16):
        for j in range(16):
            detail[i, j] = (x[0, :, i, j] - padded[:, i:i + 3, j:j + 3].mean((1, 2))).norm()
    inside_box = rasterize_boxes([Box((0.125, 0.125, 0.875, 0.875))], 16, 16)[0]
    expected = torch.ones(16, 16)
    expected[inside_box] = 1.0 + 2.0 * (detail / detail[inside_box].mean()).clamp_max(OUTLINE_DETAIL_CAP)[inside_box]
    torch.testing.assert_close(weights, expected)


def test_outline_weights_only_inside_given_boxes():
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    box = (0.0, 0.0, 0.5, 0.5)
    frames = [FrameSpec(0, (_Subject(box),)), FrameSpec(0, (_Subject(box, has_box=False),)), FrameSpec(0, ())]
    weights = outline_loss_weights(x, frames, 1.0)
    inside = rasterize_boxes([Box(box)], 16, 16)[0]
    assert (weights[0, 0][inside] > 1.0).all() and (weights[0, 0][~inside] == 1.0).all()
    assert (weights[0, 0] <= 1.0 + OUTLINE_DETAIL_CAP).all()
    assert (weights[1:] == 1.0).all()  # a dropped layout's full-frame box and a frame without subjects: uniform


def test_outline_loss_weight_draws_nothing_and_multiplies_the_subject_weight(setup):
    plain = _inputs(setup, DropoutConfig.off())
    outline = _inputs(setup, DropoutConfig.off(), outline_loss_weight=1.5)
    both = _inputs(setup, DropoutConfig.off(), outline_loss_weight=1.5, subject_loss_weight=3.0)
    subject = _inputs(setup, DropoutConfig.off(), subject_loss_weight=3.0)
    assert plain.loss_weight is None and torch.equal(plain.x_t, outline.x_t)  # no extra draws
    assert outline.loss_weight.shape == (plain.x_t.shape[0], 1, *plain.x_t.shape[-2:])
    assert (outline.loss_weight > 1.0).any() and (outline.loss_weight == 1.0).any()
    torch.testing.assert_close(both.loss_weight, outline.loss_weight * subject.loss_weight)
    off = _inputs(setup, DropoutConfig(0.0, 1.0, 0.0), outline_loss_weight=1.5)
    assert torch.equal(off.loss_weight, torch.ones_like(outline.loss_weight))  # layout dropped: nothing to stress
