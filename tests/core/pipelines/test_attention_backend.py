"""The pipeline's packed-attention backend: one setting, the same story whichever backend runs it."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_pipeline

from lay2story_core.story import Story


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


def test_cpu_settings_and_bank_passes_use_padded(pipe):
    assert pipe.attention_settings() == {"backend": "auto", "chooser": None}  # auto = padded on the CPU
    assert pipe.attention_settings(joint=False) == {"backend": "padded"}  # bank keys: padded only


@pytest.mark.parametrize("backend", ["nested", "flex"])
def test_every_backend_gives_the_same_story(pipe, backend):
    story = Story.from_dict({  # small frames: flex and nested run eagerly on the CPU (flex materialises scores)
        "version": 1, "width": 16, "height": 16,
        "characters": [{"id": "hero", "identity": "a red fox"}, {"id": "cat", "identity": "a grey cat"}],
        "frames": [{"prompt": f"on the grass {i}",
                    "subjects": [{"character": "hero", "box": [0.1, 0.2, 0.6, 0.9], "caption": "the fox"},
                                 {"character": "cat", "box": [0.6, 0.0, 1.0, 0.5 + 0.1 * i]}]}
                   for i in range(3)],
    })
    kwargs = dict(mode="lay2story", num_inference_steps=2, guidance_scale=2.0, seed=3, output_type="latent")
    reference = pipe(story, **kwargs).images
    pipe.attention_backend = backend
    try:
        other = pipe(story, **kwargs).images
    finally:
        pipe.attention_backend = "auto"
    torch.testing.assert_close(other, reference, atol=2e-5, rtol=1e-4)
