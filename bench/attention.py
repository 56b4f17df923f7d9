"""Dense additive-mask vs token-sparse masked 3D attention: median time and peak memory, measured in one run.

    python -m bench.attention [--quick] [--json PATH] [--device cuda]

Cases: f frames x N tokens per frame, 16 heads of dim 72 (PixArt-XL), subject coverage 25% (a box per frame at a
random place) and 100% (layout off). The dense baseline materialises the paper's ``(f*N)^2`` additive mask; it is
marked infeasible when that mask or its attention would not fit the budget (``--dense-budget-gb``).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from bench.common import bench_parser, measure_peak_memory, prepare, ratio, run_and_report, time_call
from lay2story_core.attention import SubjectSlots, dense_masked_3d_attention, masked_3d_attention

HEADS, HEAD_DIM = 16, 72
COLUMNS = ["frames", "tokens", "coverage", "dense_s", "sparse_s", "speedup", "dense_MB", "sparse_MB", "mem_ratio"]


def box_masks(frames: int, tokens: int, coverage: float, gen: torch.Generator) -> torch.Tensor:
    """One square-ish box per frame covering ``coverage`` of the token grid, at a random position."""
    side = int(math.isqrt(tokens))
    masks = torch.zeros(frames, side, side, dtype=torch.bool)
    box = max(1, round(side * math.sqrt(coverage)))
    for f in range(frames):
        y, x = (int(torch.randint(side - box + 1, (1,), generator=gen)) for _ in range(2))
        masks[f, y:y + box, x:x + box] = True
    return masks.view(frames, side * side)


def run(args) -> dict:
    device = prepare(args)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    frame_counts = [4, 8] if args.quick else [4, 8, 16, 32]
    token_counts = [256] if args.quick else [256, 1024]
    repeats = 2 if args.quick else 3
    budget = args.dense_budget_gb * 2**30
    gen = torch.Generator().manual_seed(0)
    rows = []
    for tokens in token_counts:
        for coverage in (0.25, 1.0):
            for frames in frame_counts:
                masks = box_masks(frames, tokens, coverage, gen).to(device)
                slots = SubjectSlots.one_per_image(masks)
                q, k, v = (torch.randn(frames, tokens, HEADS, HEAD_DIM, generator=gen).to(device, dtype)
                           for _ in range(3))
                row = {"frames": frames, "tokens": tokens, "coverage": f"{int(coverage * 100)}%"}
                sparse = partial(masked_3d_attention, q, k, v, slots)

                row["sparse_s"] = time_call(sparse, repeats=repeats, device=device)["median_s"]
                row["sparse_MB"] = measure_peak_memory(sparse, device) / 2**20
                # dense: an (fN)^2 additive mask in the compute dtype plus the bool mask it is built from
                dense_bytes = (frames * tokens) ** 2 * (torch.finfo(dtype).bits // 8 + 1)
                dense_flops = 4 * HEADS * HEAD_DIM * (frames * tokens) ** 2
                if dense_bytes > budget or (device.type == "cpu" and dense_flops > args.dense_cpu_gflop * 1e9):
                    row["dense_s"] = row["dense_MB"] = "infeasible"
                    row["speedup"] = row["mem_ratio"] = None
                else:
                    dense = partial(dense_masked_3d_attention, q, k, v, slots)

                    row["dense_s"] = time_call(dense, repeats=repeats, device=device)["median_s"]
                    row["dense_MB"] = measure_peak_memory(dense, device) / 2**20
                    row["speedup"] = ratio(row["dense_s"], row["sparse_s"])
                    row["mem_ratio"] = ratio(row["dense_MB"], max(row["sparse_MB"], 1e-3))
                rows.append(row)
    return {
        "title": f"Masked 3D attention, dense vs token-sparse ({HEADS} heads x {HEAD_DIM}, {dtype}, {device})",
        "columns": COLUMNS,
        "rows": rows,
        "notes": "speedup = dense_s / sparse_s; mem_ratio = dense_MB / sparse_MB "
                 "(CPU: peak live tensor memory from the profiler).",
    }


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--dense-budget-gb", type=float, default=8.0, help="skip dense cases whose mask exceeds this")
    parser.add_argument("--dense-cpu-gflop", type=float, default=3000.0, help="skip dense CPU cases above this cost")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
