"""Forward time and peak memory: plain PixArt vs the dual-branch Lay2StoryTransformer, measured in one run.

    python -m bench.model [--quick] [--json PATH] [--device cuda] [--full-size]

Medium CPU config: 8 blocks, hidden 384 (6 heads x 64), 256 px (32x32 latent, 256 tokens), 4 frames, T5 width
4096 with 120 caption tokens. Layout on = one box per frame covering 25% of the frame; layout off = full-frame masks
(100%). ``--full-size`` (default on CUDA): PixArt-XL (28 blocks, 1152 wide) at 512 and 1024 px.
Targets: layout on <= 1.25x plain, layout off <= 1.7x plain.
"""

from __future__ import annotations

import math

import torch
from diffusers import PixArtTransformer2DModel

from bench.common import bench_parser, measure_peak_memory, prepare, ratio, run_and_report, time_call
from lay2story_core.attention import SubjectSlots
from lay2story_core.models import Lay2StoryTransformer, SubjectBranch, SubjectInputs

COLUMNS = ["config", "frames", "variant", "coverage", "forward_s", "peak_MB", "time_ratio", "mem_ratio", "target"]
MEDIUM = dict(num_layers=8, num_attention_heads=6, attention_head_dim=64, sample_size=32, caption_channels=4096,
              cross_attention_dim=384)
XL = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, caption_channels=4096,
          cross_attention_dim=1152)


def build(config: dict, sample_size: int, device, dtype) -> Lay2StoryTransformer:
    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(**{**config, "sample_size": sample_size, "use_additional_conditions": False})
    branch = SubjectBranch.from_transformer(pixart)
    with torch.no_grad():  # a "trained" branch: non-zero outputs, so nothing is skipped
        for block in branch.blocks:
            block.proj_out.weight.normal_(std=0.02)
    return Lay2StoryTransformer(pixart, branch).to(device, dtype).eval()


def box_slots(frames: int, grid: int, coverage: float, device) -> SubjectSlots:
    masks = torch.zeros(frames, grid, grid, dtype=torch.bool)
    side = max(1, round(grid * math.sqrt(coverage)))
    for f in range(frames):
        off = (f * 3) % (grid - side + 1)
        masks[f, off:off + side, off:off + side] = True
    return SubjectSlots.one_per_image(masks.view(frames, -1).to(device))


def measure_case(model, frames: int, latent: int, coverage: float | None, repeats: int, device, dtype) -> dict:
    gen = torch.Generator().manual_seed(1)
    cfg = model.transformer.config
    x = torch.randn(frames, 4, latent, latent, generator=gen).to(device, dtype)
    text = torch.randn(frames, 120, cfg.caption_channels, generator=gen).to(device, dtype)
    mask = torch.ones(frames, 120, device=device)
    t = torch.full((frames,), 500, device=device)
    subject = None
    if coverage is not None:
        slots = box_slots(frames, latent // cfg.patch_size, coverage, device)
        captions = torch.randn(frames, 120, cfg.caption_channels, generator=gen).to(device, dtype)
        subject = SubjectInputs(
            slots=slots, caption_embeds=captions,
            caption_mask=torch.ones(frames, 120, device=device),
            reference_latents=torch.randn(frames, 4, latent, latent, generator=gen).to(device, dtype),
            reference_masks=torch.ones(frames, 1, latent, latent, device=device, dtype=dtype))

    @torch.no_grad()
    def forward():
        if subject is None:
            return model.transformer(x, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask).sample
        return model(x, text, t, None, mask, subject=subject).sample

    timing = time_call(forward, repeats=repeats, device=device)
    return {"forward_s": timing["median_s"], "peak_MB": measure_peak_memory(forward, device) / 2**20}


def run(args) -> dict:
    device = prepare(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    configs = [("medium 256px", MEDIUM, 32, 32)]
    if args.quick:
        configs = [("medium-quick 256px", {**MEDIUM, "num_layers": 4}, 32, 32)]
    if args.full_size or (device.type == "cuda" and not args.quick):
        configs += [("PixArt-XL 512px", XL, 64, 64), ("PixArt-XL 1024px", XL, 128, 128)]
    repeats = 2 if args.quick else 5
    rows = []
    for name, config, sample_size, latent in configs:
        model = build(config, sample_size, device, dtype)
        for frames in ([4] if args.quick else [4, 8]):
            base = measure_case(model, frames, latent, None, repeats, device, dtype)
            rows.append({"config": name, "frames": frames, "variant": "plain PixArt", "coverage": "-", **base,
                         "time_ratio": 1.0, "mem_ratio": 1.0})
            for variant, coverage, target in (("Lay2Story layout on", 0.25, 1.25), ("Lay2Story layout off", 1.0, 1.7)):
                res = measure_case(model, frames, latent, coverage, repeats, device, dtype)
                rows.append({"config": name, "frames": frames, "variant": variant,
                             "coverage": f"{int(coverage * 100)}%", **res,
                             "time_ratio": ratio(res["forward_s"], base["forward_s"]),
                             "mem_ratio": ratio(res["peak_MB"], max(base["peak_MB"], 1e-3)),
                             "target": f"<= {target}x"})
        del model
    return {"title": f"Forward: plain PixArt vs Lay2StoryTransformer ({device}, {dtype})", "columns": COLUMNS,
            "rows": rows, "notes": "time_ratio and mem_ratio are against plain PixArt measured in the same run."}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="also PixArt-XL at 512 and 1024 px")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
