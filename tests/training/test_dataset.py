"""Story data: JSONL index, crops that keep boxes on the character, corrupt samples skipped, tar streaming."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from training.buckets import BucketTable
from training.dataset import (
    Skipped,
    StoryDataset,
    StoryIndex,
    StoryTarStream,
    collate_examples,
    expand_sources,
)
from training.samples import Crop, crop_box, load_image
from training.tiny_assets import write_story_set, write_tar_shard

TABLE = BucketTable(32, multiple=8)


def test_index_reads_every_valid_story_and_counts_invalid_lines(tiny_assets, tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    lines = open(tiny_assets["train"], encoding="utf-8").read().splitlines()
    path.write_text("\n".join([lines[0], "{not json", json.dumps({"version": 1, "frames": []}), "", lines[1]]) + "\n")
    for folder in ("train",):
        shutil.copytree(os.path.join(os.path.dirname(tiny_assets["train"]), folder), tmp_path / folder)
    with caplog.at_level(logging.WARNING):
        index = StoryIndex([str(path)], TABLE)
    assert len(index) == 2 and index.invalid == 2
    assert "mixed.jsonl:2" in caplog.text and "mixed.jsonl:3" in caplog.text
    story = index.read(1)
    assert os.path.isabs(story.frames[0].image) and os.path.exists(story.frames[0].image)
    assert len(set(index.keys)) == 2


def test_crop_keeps_the_box_on_the_character(tmp_path):
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[10:30, 36:52] = (255, 0, 0)  # the character, box (0.45, 0.25, 0.65, 0.75) of a 2:1 image
    path = tmp_path / "wide.png"
    Image.fromarray(image).save(path)
    pixels, crop = load_image(str(path), 32, 32)  # cover to 64x32, centre-crop 32x32 (x from 16 to 48)
    assert crop == Crop((80, 40), (64, 32), 16, 0, (32, 32))
    box = crop_box((0.45, 0.25, 0.65, 0.75), crop)
    assert box == pytest.approx((0.4, 0.25, 0.8, 0.75))
    x0, y0, x1, y1 = (round(v * 32) for v in box)
    red = (pixels[0] > 0.5) & (pixels[1] < -0.5)
    assert red[y0:y1, x0:x1].float().mean() > 0.8  # the box is filled by the character ...
    outside = red.clone()
    outside[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = False
    assert not outside.any()  # ... and the character is inside the box
    assert crop_box((0.0, 0.0, 0.1, 0.5), crop) is None  # cropped away
    partly = crop_box((0.7, 0.0, 0.95, 0.5), crop)  # x 44.8..60.8 -> 28.8..44.8, clamped at the right edge
    assert partly == pytest.approx((0.9, 0.0, 1.0, 0.5))


def test_dataset_examples_and_collation(tiny_assets):
    index = StoryIndex([tiny_assets["train"]], TABLE)
    dataset = StoryDataset(index, max_frames=4)
    examples = [dataset[0], dataset[1]]
    batch = collate_examples(examples)
    assert batch.frames.shape == (batch.num_frames, 3, 32, 32) and not batch.latent
    assert all(e.story.num_frames <= 4 for e in examples)
    assert batch.frames.min() >= -1 and batch.frames.max() <= 1
    assert batch.frame_story == [s for s, e in enumerate(examples) for _ in range(e.story.num_frames)]
    ref, box = examples[0].references["hero"]
    assert ref.shape == (3, 32, 32) and box is not None


def test_corrupt_or_missing_images_are_skipped_with_a_warning(tiny_assets, tmp_path, caplog):
    data = tmp_path / "data"
    path = write_story_set(str(data), "bad", 3, size=32, seed=11)
    stories = [json.loads(line) for line in open(path, encoding="utf-8")]
    (data / stories[0]["frames"][1]["image"]).write_bytes(b"this is not a png")
    os.unlink(data / stories[2]["characters"][0]["reference"]["image"])
    dataset = StoryDataset(StoryIndex([path], TABLE), max_frames=6)
    with caplog.at_level(logging.WARNING):
        items = [dataset[i] for i in range(3)]
    assert isinstance(items[0], Skipped) and isinstance(items[2], Skipped) and not isinstance(items[1], Skipped)
    assert "skipping story" in caplog.text and "bad.jsonl" in caplog.text
    batch = collate_examples(items)
    assert len(batch) == 1 and batch.skipped == 2
    empty = collate_examples(items[:1])
    assert len(empty) == 0 and empty.frames is None and empty.skipped == 1


def test_sources_expand_and_refuse_mixed_kinds(tiny_assets, tmp_path):
    files, kind = expand_sources([os.path.dirname(tiny_assets["train"])])
    assert kind == "jsonl" and tiny_assets["train"] in files
    with pytest.raises(ValueError, match="train_data: '/nonexistent"):
        expand_sources(["/nonexistent/*.jsonl"])
    tar = write_tar_shard(tiny_assets["two"], str(tmp_path / "two.tar"))
    with pytest.raises(ValueError, match="mixes JSONL files and tar shards"):
        expand_sources([tiny_assets["two"], tar])


def test_tar_stream_yields_the_jsonl_stories_split_over_ranks_and_resumes(tiny_assets, tmp_path):
    shards = [write_tar_shard(tiny_assets["train"], str(tmp_path / "a.tar")),
              write_tar_shard(tiny_assets["two"], str(tmp_path / "b.tar"))]
    seen = []
    for rank in range(2):
        stream = StoryTarStream(shards, TABLE, 6, 1, seed=0, rank=rank, num_replicas=2)
        batches = iter(stream)
        first = [next(batches) for _ in range(4)]
        seen.append([b.examples[0].key for b in first])
        assert all(b.frames.shape[1:] == (3, 32, 32) for b in first)
        resumed = iter(StoryTarStream(shards, TABLE, 6, 1, seed=0, rank=rank, num_replicas=2, start=2))
        assert [next(resumed).examples[0].key for _ in range(2)] == seen[-1][2:]
    assert not set(seen[0][:2]) & set(seen[1][:2])  # a pass reads one shard per rank (the next pass reshuffles)
    one = iter(StoryTarStream(shards, TABLE, 6, 1, seed=0))
    keys = {next(one).examples[0].key for _ in range(8)}
    assert len(keys) == 8
    first_pixels = next(iter(StoryTarStream(shards[1:], TABLE, 6, 1))).frames
    from_jsonl = collate_examples([StoryDataset(StoryIndex([tiny_assets["two"]], TABLE), 6)[0]]).frames
    assert torch.equal(first_pixels, from_jsonl)  # the same story, decoded from the tar
