"""Train/inference parity of the subject-branch inputs (issue 12, item 7).

One story (two characters, boxed and unboxed subjects, a frame without subjects, a reference image + box per
character, subject captions) is turned into :class:`~lay2story_core.models.SubjectInputs` twice, with the same tiny
T5 / VAE / transformer / subject branch:

- the trainer's path: the JSONL dataset -> :func:`training.features.prepare_inputs` (stage 2, no dropout);
- the pipeline's path: :class:`~lay2story_core.pipelines.StoryPipeline` at CFG 1 (no unconditional half), the
  ``subject`` handed to the model on the first denoising call.

Both are compared field by field: slot token masks, images of the slots (the trainer puts references after its
frames, the pipeline after its batch), 3D groups (as a partition), per-slot caption strings and embeddings, the
per-frame reference latents/masks and the reference images' latents/masks (trainer: VAE posterior mean x scaling
factor; pipeline: mode x scaling factor). The pipeline's negative prompt must not reach the subject inputs (reference
slots are captioned with :data:`~lay2story_core.conditioning.REFERENCE_CAPTION` by both).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_pipeline

import lay2story_core.pipelines.story_pipeline as story_pipeline
import training.features as features
from lay2story_core.conditioning import REFERENCE_CAPTION
from lay2story_core.models import Lay2StoryTransformer
from lay2story_core.story import Story
from training.buckets import BucketTable
from training.dataset import StoryDataset, StoryIndex, collate_examples
from training.features import CaptionEncoder, DropoutConfig, prepare_inputs
from training.losses import GaussianDiffusion
from training.modeling import VaeInfo

SIZE = 32  # pixels: 16x16 latents (tiny VAE, factor 2), 8x8 tokens (patch 2)
MAX_LENGTH = 24
# float32 round-off (measured 2.6e-7 on reference latents of magnitude ~0.2; caption states bit-equal): batched vs
# single VAE calls, pixels as x / 127.5 - 1 (trainer) vs x / 255 * 2 - 1 (pipeline)
ATOL = 2e-6

FOX_BOXES = [(0.05, 0.1, 0.45, 0.9), (0.5, 0.3, 0.95, 0.7), None, (0.3, 0.25, 0.7, 0.75)]
CAT_BOXES = [(0.55, 0.05, 0.95, 0.6), None, None, None]
STORY = {
    "version": 1, "width": SIZE, "height": SIZE, "negative_prompt": "the blurry villain",  # non-empty: a leak shows
    "characters": [
        {"id": "fox", "identity": "a red fox with a scarf",
         "reference": {"image": "s/ref_fox.png", "box": [0.2, 0.1, 0.8, 0.95]}},
        {"id": "cat", "identity": "a blue cat",
         "reference": {"image": "s/ref_cat.png", "box": [0.1, 0.3, 0.6, 0.9]}},
    ],
    "frames": [
        {"prompt": "walking on the bridge", "image": "s/f0.png", "subjects": [
            {"character": "fox", "box": list(FOX_BOXES[0]), "caption": "the red fox walking"},
            {"character": "cat", "box": list(CAT_BOXES[0]), "caption": "the blue cat sitting on the bridge"}]},
        {"prompt": "reading a book under the tree", "image": "s/f1.png", "subjects": [
            {"character": "fox", "box": list(FOX_BOXES[1]), "caption": "the red fox reading a book"},
            {"character": "cat", "caption": "the small blue cat smiling"}]},  # no box: full frame
        {"prompt": "night sky over the grass", "image": "s/f2.png"},  # no subjects: every character, full frame
        {"prompt": "sitting in the grass", "image": "s/f3.png", "subjects": [
            {"character": "fox", "box": list(FOX_BOXES[3])}]},  # no caption: the global caption
    ],
}
COLOURS = {"fox": (220, 50, 30), "cat": (40, 80, 220)}


def _draw(path, size, background, boxes):
    width, height = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    image[::3, ::5] = (250, 250, 250)  # texture, so the VAE sees more than flat colour
    for colour, box in boxes:
        x0, y0, x1, y1 = (int(round(v * s)) for v, s in zip(box, (width, height, width, height)))
        image[y0:y1, x0:x1] = colour
    Image.fromarray(image).save(path)


@pytest.fixture(scope="module")
def story_set(tmp_path_factory):
    """The story as a one-line JSONL set (images beside it) and as a :class:`Story` with absolute paths."""
    root = tmp_path_factory.mktemp("parity")
    (root / "s").mkdir()
    backgrounds = [(90, 160, 90), (200, 200, 120), (20, 20, 50), (60, 140, 60)]
    for f, background in enumerate(backgrounds):
        boxes = [(COLOURS[c], b) for c, b in (("fox", FOX_BOXES[f]), ("cat", CAT_BOXES[f])) if b is not None]
        _draw(root / f"s/f{f}.png", (SIZE, SIZE), background, boxes)
    # references of other sizes than the frames: both paths resize them (bicubic) to the frame size
    _draw(root / "s/ref_fox.png", (48, 40), (230, 230, 230), [(COLOURS["fox"], (0.2, 0.1, 0.8, 0.95))])
    _draw(root / "s/ref_cat.png", (24, 40), (200, 190, 230), [(COLOURS["cat"], (0.1, 0.3, 0.6, 0.9))])
    jsonl = root / "story.jsonl"
    jsonl.write_text(json.dumps(STORY) + "\n", encoding="utf-8")
    return str(jsonl), Story.from_dict(STORY).resolve_paths(root)


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline("alpha512", subject_branch=True, trained=True, seed=0)


def _spy_plans(monkeypatch, module):
    """Record every :class:`SlotPlan` ``module`` builds (the planner itself is unchanged)."""
    plans = []
    planner = module.plan_subject_slots

    def spy(*args, **kwargs):
        plans.append(planner(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(module, "plan_subject_slots", spy)
    return plans


@pytest.fixture(scope="module")
def trainer_side(story_set, pipe):
    jsonl, _ = story_set
    with pytest.MonkeyPatch.context() as monkeypatch:
        plans = _spy_plans(monkeypatch, features)
        dataset = StoryDataset(StoryIndex([jsonl], BucketTable(SIZE, multiple=8)), max_frames=8)
        batch = collate_examples([dataset[0]])
        assert batch.num_frames == 4 and batch.skipped == 0
        captions = CaptionEncoder(MAX_LENGTH, tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder)
        inputs = prepare_inputs(
            batch, stage=2, captions=captions, vae=pipe.vae, vae_info=VaeInfo.from_vae(pipe.vae),
            diffusion=GaussianDiffusion(1000), generator=torch.Generator().manual_seed(0),
            dropout=DropoutConfig.off(), patch_size=pipe.patch_size,
            device=torch.device("cpu"))
    assert len(plans) == 1 and inputs.subject is not None
    return plans[0], inputs.subject


def _pipeline_side(story, pipe, negative_prompt):
    """The plan and the ``subject`` of the pipeline's first model call."""
    calls = []
    forward = Lay2StoryTransformer.forward

    def capture(self, *args, subject=None, **kwargs):
        calls.append((args[0].shape[0], subject))
        return forward(self, *args, subject=subject, **kwargs)

    with pytest.MonkeyPatch.context() as monkeypatch:
        plans = _spy_plans(monkeypatch, story_pipeline)
        monkeypatch.setattr(Lay2StoryTransformer, "forward", capture)
        pipe(story, mode="lay2story", num_inference_steps=1, guidance_scale=1.0, seed=0,
             negative_prompt=negative_prompt, max_sequence_length=MAX_LENGTH, output_type="latent")
    assert len(plans) == 1 and calls, "one joint pass, at least one model call"
    batch, subject = calls[0]
    assert batch == story.num_frames and subject is not None  # CFG 1: no unconditional half
    return plans[0], subject


@pytest.fixture(scope="module")
def pipeline_side(story_set, pipe):
    return _pipeline_side(story_set[1], pipe, None)


def _canonical(plan, subject, num_frames: int):
    """Per slot, in the planner's order: (image label, character, caption string, caption embedding, caption mask,
    token mask), the group ids relabelled by first appearance, and per character its reference image and mask.

    A slot's image label is ``("frame", f)`` or ``("reference", character)``: the reference images are images
    ``first..`` in the order of ``plan.reference_keys``, ``first`` being the model's batch (frames, both CFG halves).
    """
    slots = subject.slots
    num_refs = 0 if subject.reference_images is None else subject.reference_images.shape[0]
    assert num_refs == len(plan.reference_keys)
    first_ref = int(slots.image_index.max()) + 1 - num_refs
    assert first_ref >= num_frames
    index = subject.caption_index if subject.caption_index is not None else torch.arange(slots.num_slots)
    rows, relabel = [], {}
    for s in range(slots.num_slots):
        image = int(slots.image_index[s])
        character = plan.slot_keys[s][1]
        if image < num_frames:
            label = ("frame", image)
        else:
            assert image < first_ref + num_refs, f"slot {s}: image {image} of the unconditional half"
            label = ("reference", plan.reference_keys[image - first_ref][1])
            assert label[1] == character
        group = relabel.setdefault(int(slots.group_index[s]), len(relabel))
        c = int(index[s])
        mask = subject.caption_mask[c] if subject.caption_mask is not None else None
        rows.append({"image": label, "character": character, "caption": plan.captions[s], "group": group,
                     "embeds": subject.caption_embeds[c].float(), "caption_mask": mask,
                     "tokens": slots.masks[s].bool(), "box": slots.boxes[s].float()})
    references = {key[1]: (subject.reference_images[r].float(), subject.reference_image_masks[r].float())
                  for r, key in enumerate(plan.reference_keys)}
    return rows, references


def _expected_captions(story: Story) -> list[str]:
    frames = [s.caption for i in range(story.num_frames) for s in story.resolve_frame(i)]
    return frames + [REFERENCE_CAPTION] * len(story.characters)


def test_trainer_and_pipeline_build_the_same_subject_inputs(story_set, trainer_side, pipeline_side):
    story = story_set[1]
    (t_plan, t_sub), (p_plan, p_sub) = trainer_side, pipeline_side
    frames = story.num_frames
    t_rows, t_refs = _canonical(t_plan, t_sub, frames)
    p_rows, p_refs = _canonical(p_plan, p_sub, frames)
    # 1. the same slots: one per (frame, subject) -- the subject-less frame gets both characters -- and a reference
    #    slot per character; the reference slots are captioned REFERENCE_CAPTION, the rest by the layout rules
    assert len(t_rows) == len(p_rows) == 2 + 2 + 2 + 1 + 2
    assert [r["caption"] for r in t_rows] == [r["caption"] for r in p_rows] == _expected_captions(story)
    assert [r["image"] for r in t_rows] == [r["image"] for r in p_rows]
    assert [r["character"] for r in t_rows] == [r["character"] for r in p_rows]
    # 2. 3D groups: the same partition of the slots (one group per character, references included)
    assert [r["group"] for r in t_rows] == [r["group"] for r in p_rows]
    assert len({r["group"] for r in t_rows}) == 2
    for t, p in zip(t_rows, p_rows):
        where = f"slot {t['image']} {t['character']!r}"
        # 3. token masks: boxes rasterised identically (full frame where there is no box)
        assert torch.equal(t["tokens"].cpu(), p["tokens"].cpu()), f"{where}: token masks differ"
        assert torch.equal(t["box"].cpu(), p["box"].cpu()), f"{where}: boxes (the box embedding's input) differ"
        # 4. the caption each slot attends: its T5 states and padding mask
        torch.testing.assert_close(t["embeds"], p["embeds"], atol=ATOL, rtol=0, msg=f"{where}: caption embeds")
        assert torch.equal(t["caption_mask"].bool(), p["caption_mask"].bool()), f"{where}: caption masks differ"
    boxed = [r for r in t_rows if r["image"][0] == "frame" and not r["tokens"].all()]
    assert len(boxed) == 4  # fox in frames 0, 1, 3 and cat in frame 0; the others are full frame
    # 5. each frame's concatenated reference (its first subject with one) and its mask
    assert t_sub.reference_latents.shape == p_sub.reference_latents.shape == (frames, 4, SIZE // 2, SIZE // 2)
    torch.testing.assert_close(t_sub.reference_latents.float(), p_sub.reference_latents.float(), atol=ATOL, rtol=0)
    assert torch.equal(t_sub.reference_masks, p_sub.reference_masks)
    # 6. the reference images (clean latents, mean == mode x scaling factor) and their box masks, per character
    assert set(t_refs) == set(p_refs) == {"fox", "cat"}
    for character, (t_latent, t_mask) in t_refs.items():
        p_latent, p_mask = p_refs[character]
        assert t_latent.abs().amax() > 0.05, f"{character}: empty reference latent"
        torch.testing.assert_close(t_latent, p_latent, atol=ATOL, rtol=0, msg=f"{character}: reference latent")
        assert torch.equal(t_mask, p_mask), f"{character}: reference masks differ"
        assert 0 < t_mask.sum() < t_mask.numel()  # the reference box, not the full image
    assert not torch.equal(t_refs["fox"][0], t_refs["cat"][0])


def test_frame_reference_is_the_first_subject_with_one(story_set, trainer_side):
    """Independent of the pipeline: every frame concatenates its first subject's reference (fox everywhere here)."""
    plan, subject = trainer_side
    assert [key[1] for key in plan.reference_keys] == ["fox", "cat"]
    for f in range(story_set[1].num_frames):
        torch.testing.assert_close(subject.reference_latents[f], subject.reference_images[0], atol=0, rtol=0)
        assert torch.equal(subject.reference_masks[f], subject.reference_image_masks[0])


@pytest.mark.parametrize("negative", ["a blurry sad night", ""])  # the pipeline's default is the story's
def test_negative_prompt_does_not_reach_the_subject_inputs(story_set, pipe, pipeline_side, negative):
    """The old bug: reference slots were captioned with the negative prompt (the demo moved by max |diff| 0.05)."""
    plan, subject = _pipeline_side(story_set[1], pipe, negative)
    base_plan, base = pipeline_side
    assert plan.captions == base_plan.captions
    assert torch.equal(subject.slots.masks, base.slots.masks)
    assert torch.equal(subject.slots.group_index, base.slots.group_index)
    index, base_index = subject.caption_index, base.caption_index
    torch.testing.assert_close(subject.caption_embeds[index], base.caption_embeds[base_index], atol=0, rtol=0)
    torch.testing.assert_close(subject.caption_states[index], base.caption_states[base_index], atol=0, rtol=0)
    torch.testing.assert_close(subject.reference_images, base.reference_images, atol=0, rtol=0)
