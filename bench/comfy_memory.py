"""Peak memory of a story under ComfyUI's own KSampler: an SD1.5 story of 4 frames beside the plain batch of 4.

    python -m bench.comfy_memory [--quick] [--json PATH] [--comfy DIR] [--rate 0.5] [--steps 2] [--threads N]

ComfyUI's own ``supported_models.SD15`` UNet at its real width (320 channels, 4 levels; random weights, fp32, on
the CPU) samples 4 frames at 512 px (64x64 latents) with ``comfy.sample.sample`` (euler, 2 steps, CFG 7: conditional
and unconditional halves batched, 8 rows per model call). Rows, each measured in its own fresh process (its peak
resident set, ``VmHWM``; the model's weights are in every row):

* **plain**: the plain KSampler on a batch of 4 latents (the baseline);
* **story**: the same model patched by Lay2Story Apply Story (``nodes.comfy.story_patch.apply_story``) with the
  two-character story ``stories/two_characters.json`` (its boxes and subject captions, random caption context),
  consistent self-attention at ``--rate`` on the decoder (StoryDiffusion's ``second_half``).

``model_mb``: resident set once the model is built (before sampling); ``sampling_mb``: the peak above it;
``x_peak`` / ``x_sampling``: the row over the plain row. ``--quick``: a 2-level, 64-channel SD1.5-shaped UNet at
256 px (32x32 latents). The real ComfyUI is ``--comfy``, else ``$COMFYUI_DIR``, else ``../shared/comfyui/ComfyUI``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import bench_parser, ratio, run_and_report

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["variant", "frames", "latent", "model_calls", "model_mb", "peak_mb", "sampling_mb", "x_peak",
           "x_sampling", "seconds"]
FRAMES = 4
STORY = ROOT / "stories" / "two_characters.json"
FULL_UNET = {"model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [2, 2, 2, 2],
             "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}
QUICK_UNET = {"model_channels": 64, "channel_mult": [1, 2], "num_res_blocks": [1, 1], "transformer_depth": [1, 1],
              "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1]}


def default_comfy_dir() -> str | None:
    shared = ROOT.parent / "shared" / "comfyui" / "ComfyUI"
    return os.environ.get("COMFYUI_DIR") or (str(shared) if (shared / "comfy").is_dir() else None)


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_child(variant: str, quick: bool, rate: float, steps: int, comfy_dir: str) -> dict:
    """One row, in this (fresh) process: build the model, sample once, report the peak resident set."""
    sys.path.insert(0, str(ROOT / "tests" / "nodes"))
    from real_comfy import boot

    boot(comfy_dir)
    import comfy.ldm.modules.attention
    import comfy.model_patcher
    import comfy.sample
    import comfy.supported_models
    import torch
    from lay2story_pack.nodes.comfy.story_patch import StoryPatch, apply_story

    from lay2story_core.consistency import ConsistencyConfig, StoryBatch
    from lay2story_core.story import Story

    unet = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "use_linear_in_transformer": False,
            "context_dim": 768, "num_heads": 8, "use_temporal_attention": False, "use_temporal_resblock": False,
            **(QUICK_UNET if quick else FULL_UNET)}
    config = comfy.supported_models.SD15(unet)
    config.set_inference_dtype(torch.float32, None)
    torch.manual_seed(0)
    base = config.get_model({})
    with torch.no_grad():  # ComfyUI leaves the weights uninitialised: fill them (no NaN / denormal arithmetic)
        for p in base.diffusion_model.parameters():
            p.normal_(0, p[0].numel() ** -0.5 if p.ndim > 1 else 0.02)
    cpu = torch.device("cpu")
    model = comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)
    gen = torch.Generator().manual_seed(1)
    positive = [[torch.randn(FRAMES, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    if variant == "story":
        story = Story.from_dict(json.loads(STORY.read_text()))
        batch = StoryBatch(story, ConsistencyConfig.from_user(rate, "second_half"))
        captions = {t: torch.randn(1, 77, 768, generator=gen) for t in batch.region_captions()}
        model = apply_story(model, StoryPatch(batch, captions))
    calls = []

    def counting(apply_model, args):
        calls.append(int(args["input"].shape[0]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model = model.clone()
    model.set_model_unet_function_wrapper(counting)
    side = 32 if quick else 64
    noise = torch.randn(FRAMES, 4, side, side, generator=gen)
    model_mb = _status_mb("VmRSS")
    start = time.perf_counter()
    comfy.sample.sample(model, noise, steps, 7.0, "euler", "normal", positive, negative,
                        torch.zeros_like(noise), disable_pbar=True, seed=1)
    return {"variant": variant, "frames": FRAMES, "latent": f"{side}x{side}", "model_calls": len(calls),
            "rows_per_call": max(calls) if calls else 0, "model_mb": round(model_mb, 1),
            "peak_mb": round(_status_mb("VmHWM"), 1), "seconds": round(time.perf_counter() - start, 2),
            "attention": comfy.ldm.modules.attention.optimized_attention.__name__}


def _spawn(variant: str, args) -> dict:
    command = [sys.executable, "-m", "bench.comfy_memory", "--child", variant, "--rate", str(args.rate),
               "--steps", str(args.steps), "--comfy", args.comfy, "--threads", str(args.threads)]
    if args.quick:
        command.append("--quick")
    env = {**os.environ}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"the {variant} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    if not args.comfy or not (Path(args.comfy) / "comfy").is_dir():
        raise ValueError(f"--comfy: no ComfyUI checkout at {args.comfy!r} (or set COMFYUI_DIR)")
    if not 0.0 <= args.rate <= 1.0:
        raise ValueError(f"--rate: expected a number in [0, 1], got {args.rate}")
    if args.steps < 1:
        raise ValueError(f"--steps: expected at least 1, got {args.steps}")
    rows = [_spawn(variant, args) for variant in ("plain", "story")]
    plain = rows[0]
    for row in rows:
        row["sampling_mb"] = round(row["peak_mb"] - row["model_mb"], 1)
        row["x_peak"] = round(ratio(row["peak_mb"], plain["peak_mb"]), 3)
        row["x_sampling"] = round(ratio(row["sampling_mb"], plain["peak_mb"] - plain["model_mb"]), 3)
    size = "quick: 2-level 64-channel SD1.5-shaped UNet, 256 px" if args.quick else "SD1.5 UNet, 512 px"
    return {"title": f"Peak RSS, ComfyUI KSampler (euler, {args.steps} steps, CFG on), {FRAMES} frames, {size}, "
                     f"story rate {args.rate:g}, CPU",
            "columns": COLUMNS, "rows": rows,
            "notes": ["each row in its own process; peak_mb: VmHWM; model_mb: VmRSS after building the model; "
                      "sampling_mb: peak_mb - model_mb; x_*: over the plain row",
                      f"model_calls: UNet calls of {rows[0].get('rows_per_call')} rows (frames x CFG halves)",
                      f"ComfyUI's attention here: {rows[0].get('attention')} (on the CPU it sizes its chunks from the "
                      f"free memory, so the peaks depend on the machine); the story's sharing sites (decoder, from "
                      f"the second step) run torch's scaled_dot_product_attention over frame + shared tokens"]}


def main(argv=None) -> dict | None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=default_comfy_dir(), help="the ComfyUI checkout (default: $COMFYUI_DIR)")
    parser.add_argument("--rate", type=float, default=0.5, help="story consistency rate (default 0.5)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps (default 2)")
    parser.add_argument("--child", choices=("plain", "story"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one measurement, in its own process: its JSON line is what the parent reads
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        sys.stdout.write(json.dumps(measure_child(args.child, args.quick, args.rate, args.steps, args.comfy)) + "\n")
        return None
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
