"""The feature cache: written by training/cache.py, equal to live features, resumable, and trainable without T5."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from training.buckets import BucketTable
from training.cache import main as cache_main
from training.cache import parse_args as cache_args
from training.dataset import StoryDataset, StoryIndex, collate_examples
from training.feature_cache import FeatureCache
from training.features import CaptionEncoder, DropoutConfig, prepare_inputs
from training.losses import GaussianDiffusion
from training.modeling import load_components


@pytest.fixture(scope="module")
def cache_dir(tiny_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    args = cache_args(["--pretrained_model_name_or_path", tiny_assets["model"], "--train_data", tiny_assets["train"],
                       "--validation_data", tiny_assets["val"], "--feature_cache", str(folder), "--resolution", "32",
                       "--max_length", "24", "--cache_shard_size", "3", "--cache_dtype", "fp32"])
    summary = cache_main(args)
    assert summary == {"stories": 8, "skipped": 0, "shards": 3, "folder": str(folder)}
    return args, folder


def test_cached_features_equal_live_ones(tiny_assets, cache_dir):
    from training.train import parse_args

    cache = FeatureCache(cache_dir[1])
    assert len(cache) == 8 and cache.meta["max_length"] == 24
    args = parse_args(["--stage", "2", "--pretrained_model_name_or_path", tiny_assets["model"], "--train_data",
                       tiny_assets["train"], "--output_dir", "unused", "--max_length", "24"])
    components = load_components(args, torch.device("cpu"), "no", need_text=True, need_vae=True)
    index = StoryIndex([tiny_assets["train"]], BucketTable(32, multiple=8))
    live = collate_examples([StoryDataset(index, 6)[i] for i in (0, 1)])
    cached = collate_examples([StoryDataset(index, 6, cache)[i] for i in (0, 1)])
    assert cached.latent and cached.frames.shape == (live.num_frames, 8, 8, 8)
    assert [e.story for e in cached.examples] == [e.story for e in live.examples]
    live_captions = CaptionEncoder(24, tokenizer=components.tokenizer, text_encoder=components.text_encoder)
    cached_captions = CaptionEncoder(24, empty_states=cache.empty_text)
    common = dict(stage=2, vae=components.vae, vae_info=components.vae_info, diffusion=GaussianDiffusion(1000),
                  dropout=DropoutConfig(0.5, 0.5, 0.5), patch_size=2, device=torch.device("cpu"))
    for seed in range(3):  # several dropout draws: empty captions, global captions as subject captions, ...
        a = prepare_inputs(live, captions=live_captions, generator=torch.Generator().manual_seed(seed), **common)
        b = prepare_inputs(cached, captions=cached_captions, generator=torch.Generator().manual_seed(seed), **common)
        torch.testing.assert_close(a.x_t, b.x_t, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a.captions * a.caption_mask[..., None], b.captions, rtol=1e-4, atol=1e-5)
        assert (a.subject is None) == (b.subject is None)
        if a.subject is not None:
            torch.testing.assert_close(a.subject.caption_mask, b.subject.caption_mask)
            torch.testing.assert_close(a.subject.reference_latents, b.subject.reference_latents, rtol=1e-4,
                                       atol=1e-4)


def test_rerun_keeps_finished_shards(cache_dir, caplog):
    args, folder = cache_dir
    index = json.loads((folder / "index.json").read_text())
    with caplog.at_level(logging.INFO):
        summary = cache_main(args)
    assert summary["stories"] == 8 and caplog.text.count("keeping") == 3
    assert json.loads((folder / "index.json").read_text()) == index


def test_training_from_the_cache_loads_no_text_encoder(make_args, cache_dir, monkeypatch):
    import training.modeling
    from training.train import main

    def no_t5(*_args, **_kwargs):
        raise AssertionError("T5 must not be loaded when its features are cached")

    monkeypatch.setattr(training.modeling, "load_text_encoder", no_t5)
    args = make_args(feature_cache=str(cache_dir[1]), max_length=24, max_train_steps=2)
    summary = main(args)
    assert summary["global_step"] == 2 and all(map(lambda v: v == v, summary["loss_history"]))
    assert os.path.isfile(os.path.join(summary["output"], "config.json"))
    with pytest.raises(Exception, match="max_length is 24 in the cache but 32"):
        main(make_args(feature_cache=str(cache_dir[1]), max_length=32))


def test_a_stage_cache_is_written_before_the_branch_it_continues_exists(tiny_assets, tmp_path):
    """The recipes cache every stage's stories first: the config's subject_branch_path (the stage before's export)
    need not exist yet for the cache writer; the trainer itself still requires it."""
    from training.config import ConfigError
    from training.train import parse_args as train_args

    common = ["--pretrained_model_name_or_path", tiny_assets["model"], "--train_data", tiny_assets["train"],
              "--feature_cache", str(tmp_path / "c"), "--subject_branch_path", str(tmp_path / "not_yet")]
    assert cache_args(common).subject_branch_path == str(tmp_path / "not_yet")
    with pytest.raises(ConfigError, match="subject_branch_path: expected an existing folder"):
        train_args(["--stage", "2", "--output_dir", str(tmp_path / "o"), *common])
