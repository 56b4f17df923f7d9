"""Dense additive-mask vs token-sparse masked 3D attention per backend: median time and peak memory, in one run.

    python -m bench.attention [--quick] [--json PATH] [--device cuda] [--backends padded,nested,flex]

Cases: f frames x N tokens per frame, 16 heads of dim 72 (PixArt-XL), subject coverage 25% (a box per frame at a
random place) and 100% (layout off). The dense baseline materialises the paper's ``(f*N)^2`` additive mask; it is
marked infeasible when that mask or its attention would not fit the budget (``--dense-budget-gb``). The token-sparse
path runs with every backend of ``lay2story_core.attention.backends`` (default: padded and nested on CPU, where
FlexAttention is eager and materialises the scores; all three on CUDA); ``best`` is the fastest, what
``BackendChooser`` would pick. Full size on CUDA: ``--full-size`` adds 4096 tokens per frame (1024 px).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from bench.common import bench_parser, measure_peak_memory, prepare, ratio, run_and_report, time_call
from lay2story_core.attention import BACKENDS, SubjectSlots, dense_masked_3d_attention, masked_3d_attention

HEADS, HEAD_DIM = 16, 72
SPARSE = BACKENDS
COLUMNS = ["frames", "tokens", "coverage", "dense_s", *(f"{b}_s" for b in SPARSE), "best", "speedup", "dense_MB",
           "sparse_MB", "mem_ratio"]


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
    token_counts = [256] if args.quick else [256, 1024] + ([4096] if args.full_size else [])
    default = SPARSE if device.type == "cuda" else ("padded", "nested")
    backends = [b for b in (args.backends.split(",") if args.backends else default) if b]
    unknown = [b for b in backends if b not in SPARSE]
    if unknown:
        raise ValueError(f"backends: {unknown} not in {SPARSE}")
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
                for backend in backends:
                    sparse = partial(masked_3d_attention, q, k, v, slots, backend=backend)
                    row[f"{backend}_s"] = time_call(sparse, repeats=repeats, device=device)["median_s"]
                best = min(backends, key=lambda b: row[f"{b}_s"])
                row["best"], row["sparse_s"] = best, row[f"{best}_s"]
                sparse = partial(masked_3d_attention, q, k, v, slots, backend=best)
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
        "notes": "speedup = dense_s / best backend's s; sparse_MB and mem_ratio = dense_MB / sparse_MB for the best "
                 "backend (CPU: peak live tensor memory from the profiler).",
    }


def make_parser():
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--dense-budget-gb", type=float, default=8.0, help="skip dense cases whose mask exceeds this")
    parser.add_argument("--dense-cpu-gflop", type=float, default=3000.0, help="skip dense CPU cases above this cost")
    parser.add_argument("--backends", default="", help=f"comma-separated subset of {','.join(SPARSE)}")
    parser.add_argument("--full-size", action="store_true", help="also 4096 tokens per frame (1024 px)")
    return parser


def main(argv=None) -> dict:
    return run_and_report(run, make_parser(), argv)


if __name__ == "__main__":
    main()
