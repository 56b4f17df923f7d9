"""The ShapeStory component trainers run end to end (tiny settings) and are reproducible."""

from __future__ import annotations

import json
import os

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file
from transformers import AutoTokenizer, T5EncoderModel

from lay2story_core.shapestory.assets import TEXT_ENCODER_DIR, TOKENIZER_DIR
from training.shapestory import train_text, train_vae
from training.shapestory.common import psnr, save_folder_atomic


def test_train_vae_tiny_run_saves_a_loadable_vae(tmp_path):
    out = tmp_path / "vae"
    train_vae.main(["--out", str(out), "--downsample", "4", "--channels", "8,8,8", "--steps", "2",
                             "--batch", "2", "--crop", "16", "--train-stories", "2", "--eval-stories", "1",
                             "--metric-stories", "1", "--threads", "1"])
    vae = AutoencoderKL.from_pretrained(out)
    assert tuple(vae.config.block_out_channels) == (8, 8, 8) and not vae.config.mid_block_add_attention
    # per-channel statistics (diffusers' latents_mean/latents_std) with a unit scaling_factor
    assert vae.config.scaling_factor == 1.0
    assert len(vae.config.latents_mean) == len(vae.config.latents_std) == 4 and min(vae.config.latents_std) > 0
    saved = json.loads((out / "shapestory_training.json").read_text())
    assert saved["steps_done"] == 2 and saved["eval_frames"] >= 4 and "psnr_mean" in saved
    latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert latents.shape == (1, 4, 16, 16)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_decoder_only_fine_tune_keeps_the_latents_exactly(tmp_path):
    """``--init --decoder-only``: the encoder (so every latent a model was trained on) and the latent statistics stay
    bit for bit; only the decoder learns."""
    args = ["--downsample", "4", "--channels", "8,8,8", "--batch", "2", "--crop", "16", "--train-stories", "2",
            "--eval-stories", "1", "--metric-stories", "1", "--threads", "1"]
    train_vae.main(["--out", str(tmp_path / "base"), "--steps", "2", *args])
    report = train_vae.main(["--out", str(tmp_path / "ft"), "--steps", "3", "--init", str(tmp_path / "base"),
                             "--decoder-only", "--latent-noise", "0.3", "--multi-character-stories", "1", "--lr",
                             "1e-2", *args])
    base, tuned = (load_file(str(tmp_path / n / "diffusion_pytorch_model.safetensors")) for n in ("base", "ft"))
    assert base.keys() == tuned.keys() and report["steps_done"] == 3 and report["downsample"] == 4
    kept = [k for k in base if k.startswith(("encoder.", "quant_conv."))]
    assert kept and all(torch.equal(base[k], tuned[k]) for k in kept)
    changed = [k for k in base if k.startswith("decoder.") and not torch.equal(base[k], tuned[k])]
    assert len(changed) > len([k for k in base if k.startswith("decoder.")]) // 2
    configs = [AutoencoderKL.from_pretrained(tmp_path / n).config for n in ("base", "ft")]
    assert [(c.latents_mean, c.latents_std, c.scaling_factor) for c in configs].count(
        (configs[0].latents_mean, configs[0].latents_std, configs[0].scaling_factor)) == 2
    for bad in (["--decoder-only"], ["--init", str(tmp_path / "base")], ["--latent-noise", "0.2"]):
        with pytest.raises(SystemExit):
            train_vae.main(["--out", str(tmp_path / "x"), *bad, *args])
    assert not (tmp_path / "x").exists()


def test_build_vae_rejects_bad_shapes():
    with pytest.raises(ValueError, match="downsample"):
        train_vae.build_vae(6, (8, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        train_vae.build_vae(8, (8, 8, 8))
    with pytest.raises(ValueError, match="groups"):
        train_vae.build_vae(4, (8, 12, 16))


def test_train_text_reproduces_the_shipped_assets(tmp_path):
    report = train_text.main(["--tokenizer-out", str(tmp_path / "tok"), "--encoder-out", str(tmp_path / "enc")])
    shipped = load_file(os.path.join(TEXT_ENCODER_DIR, "model.safetensors"))
    rebuilt = load_file(str(tmp_path / "enc" / "model.safetensors"))
    assert shipped.keys() == rebuilt.keys()
    assert all(torch.equal(shipped[k], rebuilt[k]) for k in shipped)
    a = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    b = AutoTokenizer.from_pretrained(tmp_path / "tok")
    lines = train_text.caption_corpus()[::97]
    assert [a(t).input_ids for t in lines] == [b(t).input_ids for t in lines]
    assert report["embedding"]["colour_changed_token_rel_diff"] > 1.0
    assert T5EncoderModel.from_pretrained(tmp_path / "enc").config.vocab_size >= len(b)


def test_psnr_and_atomic_folder_swap(tmp_path):
    x = torch.rand(2, 3, 8, 8)
    assert torch.isinf(psnr(x, x)).logical_not().all() and (psnr(x, x) > 90).all()
    assert psnr(x.clamp(0, 1) * 0 + 0.5, torch.zeros(2, 3, 8, 8)).allclose(torch.tensor(6.0206), atol=1e-3)
    target = tmp_path / "folder"
    save_folder_atomic(str(target), lambda d: (os.makedirs(d), open(os.path.join(d, "a"), "w").write("1")))
    save_folder_atomic(str(target), lambda d: (os.makedirs(d), open(os.path.join(d, "b"), "w").write("2")))
    assert sorted(os.listdir(target)) == ["b"] and sorted(os.listdir(tmp_path)) == ["folder"]

    def broken(d):
        os.makedirs(d)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_folder_atomic(str(target), broken)
    assert sorted(os.listdir(target)) == ["b"]  # the old folder survives a failed write
    assert sorted(os.listdir(tmp_path)) == ["folder"]  # and the half-written one is gone
