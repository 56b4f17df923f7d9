"""Tiny random models and a synthetic story set, for CPU smoke runs, tests and the trainer benchmark.

    python -m training.tiny_assets --out runs/tiny_assets [--stories 16] [--size 32]

writes ``<out>/model/`` (a PixArt pipeline folder: ``transformer/``, ``text_encoder/``, ``tokenizer/``, ``vae/``, all
the real diffusers/transformers classes at toy sizes, random weights) and ``<out>/data/train.jsonl`` (+ ``val.jsonl``,
``story.json``): stories of one coloured square character on a coloured background, one box per frame, a subject
caption per frame and a reference image (another pose of the character), in the story schema.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = ["TinyModelConfig", "make_tiny_model", "write_story_set", "write_tar_shard"]

logger = logging.getLogger(__name__)

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
           "purple": (150, 60, 190), "orange": (240, 140, 30)}
SCENES = {"white room": (235, 235, 235), "dark night": (30, 30, 40), "grey street": (128, 128, 128)}
WORDS = sorted({w for text in list(COLOURS) + list(SCENES) for w in text.split()} | {
    "a", "square", "in", "the", "at", "left", "right", "top", "bottom", "centre", "small", "big", "standing"})


@dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the tiny model (defaults: ~60k parameters, images of 32 px -> 8x8 latents -> 4x4 tokens)."""

    num_layers: int = 4
    heads: int = 2
    head_dim: int = 8
    text_dim: int = 12
    text_layers: int = 1
    vae_channels: tuple[int, ...] = (8, 16, 16)  # 3 levels: 4 pixels per latent cell
    sample_size: int = 8


def _tokenizer():
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{w}" for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz,.")
    vocab = [(p, 0.0 if i < 3 else -float(i)) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def make_tiny_model(folder: str, config: TinyModelConfig | None = None, seed: int = 0) -> str:
    """Write a tiny PixArt pipeline folder (random weights); returns its path."""
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    cfg = config or TinyModelConfig()
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=cfg.text_dim, d_kv=4,
                                           d_ff=2 * cfg.text_dim, num_layers=cfg.text_layers,
                                           num_heads=2))
    width = cfg.heads * cfg.head_dim
    transformer = PixArtTransformer2DModel(
        sample_size=cfg.sample_size, num_layers=cfg.num_layers, num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim, in_channels=4, out_channels=8, cross_attention_dim=width,
        caption_channels=cfg.text_dim, patch_size=2)
    levels = len(cfg.vae_channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=cfg.vae_channels,
                        layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        sample_size=cfg.sample_size * 2 ** (levels - 1))
    os.makedirs(folder, exist_ok=True)
    tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    text_encoder.save_pretrained(os.path.join(folder, "text_encoder"))
    transformer.save_pretrained(os.path.join(folder, "transformer"))
    vae.save_pretrained(os.path.join(folder, "vae"))
    return folder


def _draw(size: int, background, colour, box) -> Image.Image:
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = background
    x0, y0, x1, y1 = (int(round(v * size)) for v in box)
    image[y0:y1, x0:x1] = colour
    return Image.fromarray(image)


def _place(box) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    horizontal = "left" if cx < 0.4 else "right" if cx > 0.6 else "centre"
    vertical = "top" if cy < 0.4 else "bottom" if cy > 0.6 else "centre"
    return horizontal if vertical == "centre" else f"{vertical} {horizontal}" if horizontal != "centre" else vertical


def _story(rng: np.random.Generator, index: int, size: int, folder: str, rel: str) -> dict:
    colour = list(COLOURS)[index % len(COLOURS)]
    frames = []
    os.makedirs(os.path.join(folder, rel), exist_ok=True)
    num = int(rng.choice([4, 5, 6], p=[0.5, 0.3, 0.2]))
    for i in range(num + 1):  # the last pose is the reference
        side = float(rng.uniform(0.3, 0.6))
        x0, y0 = (float(rng.uniform(0, 1 - side)) for _ in range(2))
        box = [round(x0, 4), round(y0, 4), round(x0 + side, 4), round(y0 + side, 4)]
        scene = list(SCENES)[int(rng.integers(len(SCENES)))]
        image = _draw(size, SCENES[scene], COLOURS[colour], box)
        name = f"{rel}/{'ref' if i == num else f'f{i}'}.png"
        image.save(os.path.join(folder, name))
        if i == num:
            reference = {"image": name, "box": box}
        else:
            caption = f"a {'big' if side > 0.45 else 'small'} {colour} square at the {_place(box)}"
            frames.append({"prompt": f"standing in the {scene}", "image": name,
                           "subjects": [{"character": "hero", "box": box, "caption": caption}]})
    return {"version": 1, "width": size, "height": size,
            "characters": [{"id": "hero", "identity": f"a {colour} square", "reference": reference}],
            "frames": frames}


def write_story_set(folder: str, name: str, stories: int, size: int = 32, seed: int = 0) -> str:
    """Write ``<folder>/<name>.jsonl`` with ``stories`` synthetic stories (PNG frames beside it); returns its path."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    lines = [json.dumps(_story(rng, i, size, folder, f"{name}/s{i:04d}")) for i in range(stories)]
    path = os.path.join(folder, f"{name}.jsonl")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def write_tar_shard(jsonl: str, path: str) -> str:
    """Pack a JSONL story set into a tar shard (``training/data``'s layout: ``<key>.json`` + image members)."""
    base = os.path.dirname(os.path.abspath(jsonl))
    tmp = f"{path}.tmp"
    with open(jsonl, encoding="utf-8") as handle, tarfile.open(tmp, "w") as tar:
        for n, line in enumerate(handle):
            if not line.strip():
                continue
            story = json.loads(line)
            key = f"story-{n:05d}"
            images = [(f, "image", f"{key}.frame{i}.png") for i, f in enumerate(story["frames"])]
            images += [(c["reference"], "image", f"{key}.ref-{c['id']}.png") for c in story["characters"]
                       if c.get("reference")]
            for holder, field, member in images:
                tar.add(os.path.join(base, holder[field]), arcname=member)
                holder[field] = member
            data = json.dumps(story).encode()
            info = tarfile.TarInfo(f"{key}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--stories", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_tiny_model(os.path.join(args.out, "model"), seed=args.seed)
    data = os.path.join(args.out, "data")
    write_story_set(data, "train", args.stories, args.size, args.seed)
    write_story_set(data, "val", max(2, args.stories // 8), args.size, args.seed + 1)
    with open(os.path.join(data, "val.jsonl"), encoding="utf-8") as handle:
        story = json.loads(handle.readline())
    with open(os.path.join(data, "story.json"), "w", encoding="utf-8") as handle:
        json.dump(story, handle, indent=1)
    print(f"wrote {args.out}/model and {args.out}/data")  # noqa: T201 - CLI output


if __name__ == "__main__":
    main()
