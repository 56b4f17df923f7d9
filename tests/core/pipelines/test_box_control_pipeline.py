"""Training-free box control in ``StoryPipeline``: strength 0 is the sampling before it, bit for bit; on, the first
steps are one background call plus one call per boxed character (its boxes centred), in every pass."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.consistency import ConsistencyConfig
from lay2story_core.consistency import box_control as box_module
from lay2story_core.pipelines import story_pipeline
from lay2story_core.story import Story

SIZE = dict(height=32, width=32, num_inference_steps=4, output_type="pt", mode="training_free")


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline(subject_branch=False)


def _story(frames: int = 3) -> Story:
    boxes = ([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], [[0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0]])
    return Story.from_dict({
        "version": 1, "width": 32, "height": 32,
        "characters": [{"id": "fox", "identity": "a red fox"}, {"id": "cat", "identity": "a blue cat"}],
        "frames": [{"prompt": f"on the grass {i}",
                    "subjects": [{"character": c, "box": b, "caption": f"the {c}"}
                                 for c, b in zip(("fox", "cat"), boxes[i % 2])][: 1 + i % 2]}
                   for i in range(frames)],
    })


class _Spy:
    """Records the batch size and the ``story_consistency`` context of every model call of the pipeline."""

    def __init__(self, pipe, monkeypatch):
        self.calls = []
        make_model = type(pipe)._model
        spy = self

        class Model:
            def __init__(self, model):
                self.model = model

            def __getattr__(self, name):
                return getattr(self.model, name)

            def __call__(self, hidden_states, *args, cross_attention_kwargs=None, **kwargs):
                ctx = (cross_attention_kwargs or {}).get("story_consistency")
                spy.calls.append((hidden_states.shape[0], ctx))
                return self.model(hidden_states, *args, cross_attention_kwargs=cross_attention_kwargs, **kwargs)

        monkeypatch.setattr(pipe, "_model", lambda: Model(make_model(pipe)))


def test_strength_zero_is_the_sampling_before_box_control(pipe, monkeypatch):
    """Strength 0 encodes no box caption, plans nothing, calls the model once per step on all frames with no
    readers restriction; so it equals a run with box control's planning removed."""
    story, encoded = _story(), []
    encode = pipe.encode_prompt
    monkeypatch.setattr(pipe, "encode_prompt", lambda texts, *a, **k: encoded.extend(texts) or encode(texts, *a, **k))
    spy = _Spy(pipe, monkeypatch)
    config = ConsistencyConfig(rate=1.0, blocks="all", box_strength=0.0)
    zero = pipe(story, seed=2, **SIZE, consistency=config).images
    resolved = [story.resolve_frame(i) for i in range(3)]
    # the background captions (the frame prompt alone) are box control's own; the characters' are region captions too
    only_box = set(box_module.box_captions(story, resolved)) - set(box_module.region_captions(story, resolved)) - {
        story.global_caption(i) for i in range(3)}
    assert only_box and not set(encoded) & only_box
    assert [b for b, _ in spy.calls] == [6] * 4 and all(ctx.readers is None for _, ctx in spy.calls)
    monkeypatch.setattr(story_pipeline.BoxPlan, "build", classmethod(lambda cls, *a, **k: None))
    monkeypatch.setattr(story_pipeline, "box_captions", lambda *a, **k: [])
    assert torch.equal(zero, pipe(story, seed=2, **SIZE, consistency=config).images)


def test_box_control_composes_the_first_steps_box_by_box(pipe, monkeypatch):
    story = _story()
    spy = _Spy(pipe, monkeypatch)
    on = pipe(story, seed=2, **SIZE, consistency=ConsistencyConfig(rate=1.0, blocks="all", box_strength=0.5)).images
    # steps 0-1: the background, the fox (boxed in frames 0-2), the cat (frame 1) on every frame; steps 2-3: one call
    assert [b for b, _ in spy.calls] == [6] * 8
    background, fox, cat = (ctx for _, ctx in spy.calls[:3])
    assert background.regional is None and torch.equal(background.readers, background.subject_masks)
    assert (background.bank_key, fox.bank_key, cat.bank_key) == (None, "fox", "cat")
    assert torch.equal(fox.readers, fox.subject_masks) and fox.readers[:, 27:29].all()  # the box is centred
    assert cat.readers[[1, 4]].any(1).all() and not cat.readers[[0, 2, 3, 5]].any()  # frames without its box
    again = pipe(story, seed=2, **SIZE, consistency=ConsistencyConfig(rate=1.0, blocks="all", box_strength=0.5)).images
    zero = pipe(story, seed=2, **SIZE, consistency=ConsistencyConfig(rate=1.0, blocks="all", box_strength=0.0)).images
    assert torch.equal(on, again) and not torch.allclose(on, zero) and torch.isfinite(on).all()


def test_box_control_in_the_write_read_scheme_keeps_each_characters_bank_entries_apart(pipe, monkeypatch):
    story = _story(5)
    spy = _Spy(pipe, monkeypatch)
    out = pipe(story, seed=1, **SIZE, chunk_size=2, identity_frames=2,
               consistency=ConsistencyConfig(rate=1.0, blocks="all", box_strength=1.0)).images
    assert out.shape == (5, 3, 32, 32) and torch.isfinite(out).all()
    assert {ctx.mode for _, ctx in spy.calls} == {"write", "read"}
    bank = next(ctx.bank for _, ctx in spy.calls if ctx.mode == "write")
    assert {key[2:] for key in bank} == {(), ("fox",), ("cat",)}  # (step, block[, character])


def test_config_without_boxes_or_outside_training_free_runs_as_before(pipe, monkeypatch):
    bare = _story().with_layout(boxes=False, captions=False)
    spy = _Spy(pipe, monkeypatch)
    pipe(bare, seed=0, **SIZE, consistency=ConsistencyConfig(box_strength=1.0))
    assert [b for b, _ in spy.calls] == [6] * 4
    spy.calls.clear()
    pipe(_story(), seed=0, **{**SIZE, "mode": "none"})
    assert [b for b, _ in spy.calls] == [6] * 4
