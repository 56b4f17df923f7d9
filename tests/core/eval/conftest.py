"""Tiny random metric backbones (real transformers classes, toy sizes) and synthetic story images."""

import random

import pytest
import torch
from PIL import Image, ImageDraw

from lay2story_core.story import Story


def save_tiny_vit(folder, seed=0, image_size=32):
    """A tiny ``ViTModel`` folder (DINO-style backbone)."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTModel(config, add_pooling_layer=False)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from lay2story_core.vision.tiny import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip", seed=0)


@pytest.fixture(scope="session")
def tiny_dreamsim_dir(tmp_path_factory):
    from lay2story_core.vision.tiny import save_tiny_clip

    root = tmp_path_factory.mktemp("dreamsim")
    save_tiny_vit(root / "dino_vitb16", seed=1)
    save_tiny_clip(root / "clip_vitb16", seed=2)
    save_tiny_clip(root / "open_clip_vitb16", seed=3)
    return root


def random_image(seed, size=48):
    """A random scene: noise background plus a few coloured shapes."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    noise = (torch.rand(size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
    img = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.randrange(0, size - 8), rng.randrange(0, size - 8)
        x1, y1 = rng.randrange(x0 + 4, size), rng.randrange(y0 + 4, size)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return img


def make_story(num_frames=4, *, boxes=True, prompts=None):
    prompts = prompts or [f"scene number {i}" for i in range(num_frames)]
    frames = []
    for prompt in prompts:
        subjects = [{"character": "hero", "box": [0.1, 0.1, 0.6, 0.9]}] if boxes else []
        frames.append({"prompt": prompt, "subjects": subjects})
    return Story.from_dict({"version": 1, "width": 64, "height": 64,
                            "characters": [{"id": "hero", "identity": "a red fox"}], "frames": frames})


@pytest.fixture
def rand_img():
    return random_image


@pytest.fixture
def story_factory():
    return make_story
