"""Step inputs: dropout semantics (CFG, layout, subject captions), one timestep per story, reproducibility."""

from __future__ import annotations

import pytest
import torch

from lay2story_core.story import rasterize_boxes
from training.buckets import BucketTable
from training.dataset import StoryDataset, StoryIndex, collate_examples
from training.features import CaptionEncoder, DropoutConfig, compute_loss, prepare_inputs
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
