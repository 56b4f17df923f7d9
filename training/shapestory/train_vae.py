"""Train the tiny ShapeStory VAE (a diffusers ``AutoencoderKL``) on ShapeStory frames, on one CPU core.

    nice -n 10 .venv/bin/python -m training.shapestory.train_vae --out lay2story_core/assets/shapestory/pipeline/vae

The VAE is fully convolutional (no mid-block attention), so it trains on random crops aligned to its latent grid and
runs on whole frames of any size. Loss: MSE + ``--l1-weight`` L1 + ``--kl-weight`` KL (per latent element) on a
posterior sample. After training, ``scaling_factor`` is set to 1 / std of the posterior means on training frames
(diffusers' convention: latents * scaling_factor have unit variance), held-out frames (test split: unseen
characters) are reconstructed for PSNR, and ShapeStory metrics are compared on ground truth vs reconstructions.
Everything measured goes to ``shapestory_training.json`` beside the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time

import numpy as np
import torch
from diffusers import AutoencoderKL

from lay2story_core.latents import LatentNormalization
from lay2story_core.shapestory import ShapeStoryConfig, score_story, summarize
from lay2story_core.shapestory.generator import render_story

from .common import frame_pool, psnr, save_folder_atomic, story_pool

__all__ = ["build_vae", "evaluate_vae", "main", "train_vae"]

logger = logging.getLogger(__name__)


def build_vae(downsample: int, channels: tuple[int, ...], groups: int = 8, sample_size: int = 64) -> AutoencoderKL:
    """A 4-channel ``AutoencoderKL`` that downsamples by ``downsample`` (one block per channel entry)."""
    blocks = int(round(math.log2(downsample))) + 1
    if 2 ** (blocks - 1) != downsample:
        raise ValueError(f"downsample must be a power of two, got {downsample}")
    if len(channels) != blocks:
        raise ValueError(f"channels needs {blocks} entries for downsample {downsample}, got {channels}")
    if any(c % groups for c in channels):
        raise ValueError(f"every channel count must divide by groups={groups}, got {channels}")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=sample_size,
        mid_block_add_attention=False,
    )


def _crops(x: torch.Tensor, crop: int, step: int, gen: torch.Generator) -> torch.Tensor:
    """A random ``crop`` x ``crop`` window per image, its corner on a multiple of ``step``."""
    _, _, h, w = x.shape
    if crop >= min(h, w):
        return x
    ys = torch.randint(0, (h - crop) // step + 1, (x.shape[0],), generator=gen) * step
    xs = torch.randint(0, (w - crop) // step + 1, (x.shape[0],), generator=gen) * step
    return torch.stack([img[:, y:y + crop, x0:x0 + crop] for img, y, x0 in zip(x, ys.tolist(), xs.tolist())])


def train_vae(vae: AutoencoderKL, pool: torch.Tensor, *, steps: int, batch: int, crop: int, lr: float,
              kl_weight: float, l1_weight: float, seed: int, max_seconds: float | None = None,
              log_every: int = 50, decoder_only: bool = False, latent_noise: float = 0.0) -> dict:
    """Train in place on ``pool`` (N, 3, H, W uint8). Returns the run's figures.

    ``decoder_only``: the encoder (and ``quant_conv``) stay frozen, so every latent it gives is unchanged and models
    trained on them stay valid; the decoder learns from the posterior means plus, with ``latent_noise`` > 0,
    Gaussian noise of a random strength up to ``latent_noise`` latent standard deviations per image (a diffusion
    model's final latents are never exact)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if decoder_only:
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.train()
    start, cpu_start, done, recent = time.monotonic(), time.process_time(), 0, []
    for step in range(steps):
        idx = torch.randint(0, pool.shape[0], (batch,), generator=gen)
        x = _crops(pool[idx].float() / 127.5 - 1.0, crop, down, gen)
        if decoder_only:
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mode()
                if latent_noise > 0:
                    strength = latent_noise * torch.rand(z.shape[0], 1, 1, 1, generator=gen)
                    z = z + strength * z.std(dim=(0, 2, 3), keepdim=True) * torch.randn(z.shape, generator=gen)
            kl = torch.zeros(())
        else:
            posterior = vae.encode(x).latent_dist
            z = posterior.sample(generator=gen)
            kl = posterior.kl().mean() / z[0].numel()
        rec = vae.decode(z).sample
        mse = torch.nn.functional.mse_loss(rec, x)
        loss = mse + l1_weight * (rec - x).abs().mean() + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        done = step + 1
        recent.append(mse.item())
        if done % log_every == 0 or done == steps:
            # x is in [-1, 1]: PSNR on [0, 1] images is 10 log10(4 / mse).
            logger.info("step %d/%d  mse %.5f (train psnr %.2f dB)  kl %.3f  %.0f s wall, %.0f s cpu", done, steps,
                        np.mean(recent), 10 * math.log10(4 / max(np.mean(recent), 1e-10)), kl.item(),
                        time.monotonic() - start, time.process_time() - cpu_start)
            recent = []
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            logger.warning("time limit reached after %d of %d steps", done, steps)
            break
    vae.eval()
    return {"steps_done": done, "train_wall_seconds": round(time.monotonic() - start, 1),
            "train_cpu_seconds": round(time.process_time() - cpu_start, 1)}


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> reconstructions in [0, 1] through the posterior mean."""
    out = []
    for chunk in pixels.split(batch):
        x = chunk.float() / 127.5 - 1.0
        out.append(((vae.decode(vae.encode(x).latent_dist.mode()).sample + 1) / 2).clamp(0, 1))
    return torch.cat(out)


@torch.no_grad()
def latent_std(vae: AutoencoderKL, pixels: torch.Tensor, batch: int = 64) -> float:
    means = [vae.encode(chunk.float() / 127.5 - 1.0).latent_dist.mode() for chunk in pixels.split(batch)]
    return float(torch.cat(means).std())


@torch.no_grad()
def channel_statistics(vae: AutoencoderKL, pixels: torch.Tensor, batch: int = 64):
    """Per-channel mean and std of the posterior modes (``LatentNormalization.channel_statistics``)."""
    means = [vae.encode(chunk.float() / 127.5 - 1.0).latent_dist.mode() for chunk in pixels.split(batch)]
    return tuple(list(v) for v in LatentNormalization.channel_statistics(torch.cat(means)))


@torch.no_grad()
def evaluate_vae(vae: AutoencoderKL, eval_stories: int, metric_stories: int, seed: int) -> dict:
    """PSNR on held-out frames (test split) and ShapeStory metrics on ground truth vs reconstructions."""
    pixels = frame_pool(eval_stories, "test", seed + 1)
    rec = reconstruct(vae, pixels)
    values = psnr(rec, pixels.float() / 255.0)
    gt_scores, rec_scores = [], []
    for story in story_pool(metric_stories, "test", seed + 2):
        images, _ = render_story(story)
        batch = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2)
        recon = (reconstruct(vae, batch) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        gt_scores.append(score_story(images, story))
        rec_scores.append(score_story(list(recon), story))
    return {
        "eval_frames": int(pixels.shape[0]),
        "psnr_mean": round(float(values.mean()), 2),
        "psnr_p05": round(float(values.quantile(0.05)), 2),
        "psnr_min": round(float(values.min()), 2),
        "metrics_ground_truth": summarize(gt_scores),
        "metrics_reconstruction": summarize(rec_scores),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to save_pretrained into (replaced atomically)")
    parser.add_argument("--downsample", type=int, default=4, help="spatial downsampling: 4 (64 px -> 16x16) or 8")
    parser.add_argument("--channels", default="16,32,64", help="block_out_channels, one per block")
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=32, help="training crop side (multiple of the downsampling)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-5)
    parser.add_argument("--l1-weight", type=float, default=0.1)
    parser.add_argument("--logvar-init", type=float, default=-6.0, help="initial posterior log-variance")
    parser.add_argument("--train-stories", type=int, default=1500)
    parser.add_argument("--eval-stories", type=int, default=100)
    parser.add_argument("--metric-stories", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this long (wall clock)")
    parser.add_argument("--init", default=None, help="start from this VAE folder instead of a new one")
    parser.add_argument("--decoder-only", action="store_true",
                        help="with --init: train the decoder alone; the encoder, its latents and their statistics "
                             "stay exactly as they are (models trained on them stay valid)")
    parser.add_argument("--latent-noise", type=float, default=0.0,
                        help="with --decoder-only: noise of up to this many latent stds added to the decoder's input")
    parser.add_argument("--multi-character-stories", type=int, default=0,
                        help="extra training stories with more characters (a second in 70%%, a third in half of "
                             "those): small characters side by side")
    args = parser.parse_args(argv)
    if args.crop % args.downsample:
        parser.error(f"--crop {args.crop} must be a multiple of --downsample {args.downsample}")
    if args.decoder_only != bool(args.init):
        parser.error("--decoder-only and --init go together (the VAE whose encoder and latents are kept)")
    if args.latent_noise and not args.decoder_only:
        parser.error("--latent-noise is for --decoder-only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    channels = tuple(int(c) for c in args.channels.split(","))

    t0, cpu0 = time.monotonic(), time.process_time()
    pool = frame_pool(args.train_stories, "train", args.seed)
    if args.multi_character_stories:
        crowded = ShapeStoryConfig(second_character_prob=0.7, third_character_prob=0.5)
        pool = torch.cat([pool, frame_pool(args.multi_character_stories, "train", args.seed + 21, crowded)])
    logger.info("rendered %d training frames in %.1f s", pool.shape[0], time.monotonic() - t0)
    torch.manual_seed(args.seed)
    if args.init:
        vae = AutoencoderKL.from_pretrained(args.init)
    else:
        vae = build_vae(args.downsample, channels)
        with torch.no_grad():  # start with a narrow posterior: sampling noise at std 1 stalls early training
            vae.quant_conv.bias[vae.config.latent_channels:] = args.logvar_init
    run = train_vae(vae, pool, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr,
                    kl_weight=args.kl_weight, l1_weight=args.l1_weight, seed=args.seed,
                    max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                    decoder_only=args.decoder_only, latent_noise=args.latent_noise)
    std = latent_std(vae, pool[: min(2000, pool.shape[0])])
    if not args.decoder_only:
        # per-channel statistics (diffusers' latents_mean / latents_std, lay2story_core.latents): this VAE's channels
        # spread 0.7 .. 3.3, and one scalar scale would leave the narrow ones drowned in noise at every timestep
        channel_mean, channel_std = channel_statistics(vae, pool[: min(2000, pool.shape[0])])
        vae.register_to_config(scaling_factor=1.0, latents_mean=channel_mean, latents_std=channel_std)
    report = {
        "command": " ".join(["python -m training.shapestory.train_vae", *(sys.argv[1:] if argv is None else argv)]),
        "downsample": 2 ** (len(vae.config.block_out_channels) - 1),
        "block_out_channels": list(vae.config.block_out_channels),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "train_frames": int(pool.shape[0]),
        **vars(args),
        **run,
        "latent_std": round(std, 4),
        "scaling_factor": vae.config.scaling_factor,
        **evaluate_vae(vae, args.eval_stories, args.metric_stories, args.seed),
        "total_wall_seconds": round(time.monotonic() - t0, 1),
        "total_cpu_seconds": round(time.process_time() - cpu0, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }

    def write(folder: str) -> None:
        vae.save_pretrained(folder, safe_serialization=True)
        with open(f"{folder}/shapestory_training.json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)

    save_folder_atomic(args.out, write)
    logger.info("saved to %s: %s", args.out, json.dumps({k: report[k] for k in ("psnr_mean", "psnr_p05",
                                                                              "steps_done", "total_cpu_seconds")}))
    return report


if __name__ == "__main__":
    main()
