"""Fixtures for the benchmark CLI tests: tiny random backbones and a generated-frames folder."""

import json

import pytest
import torch
from PIL import Image


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory):
    """``{"clip": folder, "dreamsim": folder}`` of tiny random transformers models (real classes, toy sizes)."""
    from transformers import ViTConfig, ViTModel

    from lay2story_core.vision.tiny import save_tiny_clip

    root = tmp_path_factory.mktemp("backbones")
    clip = save_tiny_clip(root / "clip", seed=0)
    dreamsim = root / "dreamsim"
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        ViTModel(config, add_pooling_layer=False).save_pretrained(dreamsim / "dino_vitb16")
    save_tiny_clip(dreamsim / "clip_vitb16", seed=2)
    save_tiny_clip(dreamsim / "open_clip_vitb16", seed=3)
    return {"clip": clip, "dreamsim": str(dreamsim)}


def _story(frames):
    return {"version": 1, "width": 64, "height": 64, "characters": [{"id": "hero", "identity": "a red fox"}],
            "frames": [{"prompt": f"frame {i}", "subjects": [{"character": "hero", "box": [0.2, 0.2, 0.8, 0.9]}]}
                       for i in range(frames)]}


@pytest.fixture
def bench_dirs(tmp_path):
    """Two stories (4 and 5 frames) as story files, their generated frames (with stats.json) and real images."""
    stories, generated, real = tmp_path / "stories", tmp_path / "gen", tmp_path / "real"
    for d in (stories, generated, real):
        d.mkdir()
    gen = torch.Generator().manual_seed(0)
    for name, frames in (("alpha", 4), ("beta", 5)):
        (stories / f"{name}.json").write_text(json.dumps(_story(frames)))
        (generated / name).mkdir()
        for i in range(frames):
            pixels = (torch.rand(40, 40, 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(generated / name / f"frame_{i:03d}.png")
            Image.fromarray(255 - pixels).save(real / f"{name}_{i}.png")
        (generated / name / "stats.json").write_text(json.dumps({"seconds": 2.0 + frames,
                                                                 "peak_memory_bytes": frames * 10**9}))
    return {"stories": stories, "generated": generated, "real": real}
