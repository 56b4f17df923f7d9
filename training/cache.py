"""Precompute T5 caption states and VAE latent moments into a feature cache, so training does not need T5 in memory.

    python training/cache.py --config training/configs/stage2.yaml --feature_cache data/cache-512
    accelerate launch training/train.py --config training/configs/stage2.yaml --feature_cache data/cache-512

Takes the trainer's options (the same YAML works; ``feature_cache`` names the folder to write) plus
``--cache_shard_size``/``--cache_dtype``. Stories of ``train_data`` (JSONL or tar) and ``validation_data`` are
cached at their bucket size (the same bucketing and crops as training) with every caption training can ask for:
each frame's global caption and each given subject caption (the empty caption is stored once). Per story, the
frames' VAE moments are stored (training samples a fresh latent from them each time, as PixArt does).

The run is resumable: each shard is written atomically and kept on a re-run; the index is written last. A story
whose images cannot be read is skipped with a warning (training then skips it too, counted).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root replaces training/ on sys.path
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from safetensors import safe_open

from lay2story_core.story import Story
from lay2story_core.text import encode_texts
from training.buckets import BucketTable
from training.config import ConfigError, build_parser
from training.config import parse_args as _parse_args
from training.dataset import StoryIndex, _member_opener, _tar_samples, expand_sources
from training.feature_cache import (
    CACHE_VERSION,
    EMPTY_FILE,
    INDEX_FILE,
    META_FILE,
    ShardWriter,
    save_safetensors_atomic,
    write_json_atomic,
)
from training.modeling import VaeInfo, load_text_encoder, load_vae, resolve_frozen_dtype
from training.samples import load_pixels, story_key, truncate_story

__all__ = ["main", "parse_args"]

logger = logging.getLogger(__name__)

_CACHE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _parser():
    parser = build_parser("Precompute T5 and VAE features for training/train.py.", require=False)
    g = parser.add_argument_group("cache")
    g.add_argument("--cache_shard_size", type=int, default=256, help="stories per safetensors shard")
    g.add_argument("--cache_dtype", choices=tuple(_CACHE_DTYPES), default="fp16", help="dtype of stored features")
    parser.set_defaults(_writes_cache=True)
    return parser


def parse_args(argv: Sequence[str] | None = None):
    args = _parse_args(argv, _parser())
    if not args.feature_cache:
        raise ConfigError("feature_cache: required (the folder to write the cache to), got None")
    if not args.train_data:
        raise ConfigError("train_data: required (the stories to cache), got None")
    if args.cache_shard_size < 1:
        raise ConfigError(f"cache_shard_size: expected an integer >= 1, got {args.cache_shard_size!r}")
    return args


def _patch_size(args) -> int:
    """The transformer's patch size from its config.json (all released PixArt models: 2)."""
    source = args.transformer_path or args.pretrained_model_name_or_path
    for candidate in (os.path.join(source, "transformer", "config.json"), os.path.join(source, "config.json")):
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as handle:
                return int(json.load(handle).get("patch_size", 2))
    return 2


def _stories(paths: list[str], field: str, table: BucketTable) -> Iterator[tuple[str, str, Story, object]]:
    """``(key, where, story with absolute/member paths, opener or None)`` of every story, in a fixed order."""
    files, kind = expand_sources(paths, field)
    if kind == "jsonl":
        index = StoryIndex(files, table)
        for i in range(len(index)):
            yield index.keys[i], index.where(i), index.read(i), None
        return
    for shard in files:
        for name, data, tar in _tar_samples(shard):
            if isinstance(data, dict):
                key = story_key(data, f"{os.path.basename(shard)}:{name}")
                yield key, f"{shard}:{name}", Story.from_dict(data), _member_opener(tar, name)


@torch.no_grad()
def _encode_story(story: Story, size, key, opener, tokenizer, text_encoder, vae, max_frames, max_length):
    example = load_pixels(truncate_story(story, max_frames), key, size, opener)
    dist = vae.encode(example.pixels.to(vae.device, vae.dtype)).latent_dist
    frames = torch.cat([dist.mean, dist.logvar], dim=1)
    references = {}
    for k, character in enumerate(example.story.characters):
        if character.id in example.references:
            ref = vae.encode(example.references[character.id][0][None].to(vae.device, vae.dtype)).latent_dist
            references[k] = torch.cat([ref.mean, ref.logvar], dim=1)[0]
    s = example.story
    texts = {s.global_caption(i) for i in range(s.num_frames)}
    texts |= {sub.caption for frame in s.frames for sub in frame.subjects if sub.caption}
    texts = sorted(texts)
    embeds, mask = encode_texts(texts, tokenizer, text_encoder, max_length=max_length)
    states = {t: embeds[i, : int(mask[i].sum())] for i, t in enumerate(texts)}
    return example, frames, references, states


def main(args) -> dict:
    """Write the cache; returns ``{"stories", "skipped", "shards", "folder"}``."""
    folder = args.feature_cache
    os.makedirs(folder, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    frozen = resolve_frozen_dtype(args.frozen_dtype, args.mixed_precision or "no")
    text_device = device if args.text_encoder_device == "accelerator" else torch.device("cpu")
    vae_device = device if args.vae_device == "accelerator" else torch.device("cpu")
    tokenizer, text_encoder = load_text_encoder(args, text_device, frozen)
    vae = load_vae(args, vae_device, frozen)
    info = VaeInfo.from_vae(vae)
    table = BucketTable(args.resolution, info.scale_factor * _patch_size(args), enabled=args.aspect_ratio_buckets)
    store = _CACHE_DTYPES[args.cache_dtype]
    sources = list(args.train_data) + list(args.validation_data or [])
    index: dict[str, str] = {}
    shards, skipped, cached = [], 0, 0
    writer, shard_no, in_shard = None, 0, 0

    def flush():
        nonlocal writer
        if writer is not None:
            writer.write()
            index.update(dict.fromkeys(writer.keys, os.path.basename(writer.path)))
            shards.append(os.path.basename(writer.path))
        writer = None

    stories = itertools.chain(_stories(args.train_data, "train_data", table),
                              _stories(args.validation_data, "validation_data", table) if args.validation_data else ())
    for position, (key, where, story, opener) in enumerate(stories):  # lazily: tar openers live with their shard
        shard_no, in_shard = divmod(position, args.cache_shard_size)
        path = os.path.join(folder, f"features-{shard_no:05d}.safetensors")
        if in_shard == 0:
            flush()
            if os.path.isfile(path):  # written by an earlier (interrupted) run: keep it
                with safe_open(path, framework="pt") as handle:
                    keys = [k for k in (handle.metadata() or {}) if k != "format"]
                index.update(dict.fromkeys(keys, os.path.basename(path)))
                shards.append(os.path.basename(path))
                logger.info("keeping %s (%d stories)", path, len(keys))
            else:
                writer = ShardWriter(path, store)
        if writer is None:
            continue
        size = table.size(table.bucket_of(story.height, story.width))
        try:
            example, frames, refs, texts = _encode_story(story, size, key, opener, tokenizer, text_encoder, vae,
                                                         args.max_frames, args.max_length)
        except Exception as err:  # noqa: BLE001 - an unreadable story is skipped, the cache goes on
            skipped += 1
            logger.warning("skipping story %s: %s: %s", where, type(err).__name__, err)
            continue
        writer.add(key, example.story, size, frames, refs, texts)
        cached += 1
    flush()
    empty, mask = encode_texts([""], tokenizer, text_encoder, max_length=args.max_length)
    save_safetensors_atomic({"text": empty[0, : int(mask[0].sum())].to("cpu", store)},
                            os.path.join(folder, EMPTY_FILE))
    write_json_atomic(os.path.join(folder, INDEX_FILE), index)
    meta = {"version": CACHE_VERSION, "resolution": args.resolution, "aspect_ratio_buckets": args.aspect_ratio_buckets,
            "bucket_multiple": table.multiple, "max_frames": args.max_frames, "max_length": args.max_length,
            "vae": info.to_dict(), "dtype": args.cache_dtype, "sources": sources, "shards": shards,
            "text_encoder": args.text_encoder_path or args.pretrained_model_name_or_path,
            "vae_path": args.vae_path or args.pretrained_model_name_or_path}
    write_json_atomic(os.path.join(folder, META_FILE), meta)
    logger.info("feature cache %s: %d stories in %d shards (%d newly encoded, %d skipped)", folder, len(index),
                len(shards), cached, skipped)
    return {"stories": len(index), "skipped": skipped, "shards": len(shards), "folder": folder}


def cli(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        args = parse_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    summary = main(args)
    print(f"cached {summary['stories']} stories in {summary['shards']} shards ({summary['skipped']} skipped) "  # noqa: T201
          f"to {summary['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
