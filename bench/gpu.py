"""One GPU run, one table: CUDA tests, full-size story sampling, model-call TFLOP/s, attention backends, trainer step.

    python -m bench.gpu [--json PATH] [--budget-s 450] [--peak-tflops N] [--quick]

Sized for <= 8 minutes on one H100/H200 (``--budget-s``: cases that would start after the budget are listed as
skipped, never silently dropped). Sections, in order of importance:

1. ``pytest -m cuda`` (every attention backend == the dense reference on CUDA, the measured backend choice);
2. model call, PixArt-XL-2 1024 px, 4 frames + CFG, bf16: seconds, counted TFLOP, TFLOP/s and % of the GPU's
   dense bf16 peak, for plain / Lay2Story layout on / layout off / training-free;
3. story sampling at 1024 px, bf16, 25 steps, CFG 4.5, T5 offloaded: 4 frames jointly and 32 frames (chunks of 4
   after 4 identity frames, identity bank on the GPU), seconds and peak allocator memory, plain / layout on /
   training-free (random weights: speed and memory do not depend on them);
4. the masked 3D attention at full size per backend (``bench/attention.py``);
5. stage-2 training step at 512 px (4-frame stories, batch 2, gradient checkpointing, bf16 autocast, AdamW on the
   subject branch): steps/s and peak memory.

``--quick`` runs tiny sizes (also on CPU) to check the script itself.
"""

from __future__ import annotations

import subprocess
import sys
import time

import torch

from bench.common import bench_parser, count_flops, format_value, prepare, run_and_report

COLUMNS = ["section", "case", "variant", "seconds", "peak_GB", "TFLOP", "TFLOP/s", "pct_of_peak", "note"]
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def cuda_tests(quick: bool) -> list[dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests"],
                          capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return [{"section": "tests", "case": "pytest -m cuda", "variant": f"exit {proc.returncode}",
             "seconds": time.perf_counter() - start, "note": summary}]


def model_calls(device, dtype, quick: bool, peak: float | None) -> list[dict]:
    from bench.model import MEDIUM, XL, Case, build

    config, latent = (({**MEDIUM, "num_layers": 2}, 32) if quick else (XL, 128))
    model = build(config, latent, device, dtype, ms=not quick)
    case = Case(model, 4, latent, cfg=True, device=device, dtype=dtype)
    rows = []
    for name, variant in (("plain PixArt", None), ("Lay2Story layout on", 0.25), ("Lay2Story layout off", 1.0),
                          ("training-free", "tf")):
        fn = case.forward(variant)
        fn()
        _, flops = count_flops(fn)
        _peak_reset(device)
        _sync(device)
        start = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            fn()
        _sync(device)
        seconds = (time.perf_counter() - start) / repeats
        tflops = flops / 1e12 / seconds
        rows.append({"section": "model call", "case": f"{'tiny' if quick else 'XL 1024px'} 4 frames + CFG",
                     "variant": name, "seconds": seconds, "peak_GB": _peak_gb(device), "TFLOP": flops / 1e12,
                     "TFLOP/s": tflops, "pct_of_peak": None if peak is None else 100 * tflops / peak})
    del model, case
    return rows


def sampling(device, dtype, quick: bool, budget: Budget, call_flops: dict, peak: float | None) -> list[dict]:
    """``call_flops``: FLOPs of one 4-frame + CFG model call per variant (the model-call section); a story's
    transformer FLOPs are that x steps x passes (chunks of 4 frames), and TFLOP/s is over the whole story's time."""
    from bench.sampling import build_pipeline, story

    pipe = build_pipeline("quick" if quick else "xl", device, dtype)
    px, steps = (256, 2) if quick else (1024, 25)
    rows = []
    for mode in ("none", "lay2story", "training_free"):  # warm-up: kernels, autotuning, allocator
        pipe(story(4, px), mode=mode, num_inference_steps=2, seed=0, output_type="latent")
    for frames, chunk in ((4, None), (32, 4)):
        for name, mode in (("plain PixArt", "none"), ("Lay2Story layout on", "lay2story"),
                           ("training-free", "training_free")):
            label = f"{px}px {frames} frames" + (f" (chunks of {chunk})" if chunk else "")
            if budget.left() < (60 if frames == 4 else 150) and not quick:
                rows.append({"section": "sampling", "case": label, "variant": name, "note": "skipped: time budget"})
                continue
            _peak_reset(device)
            start = time.perf_counter()
            pipe(story(frames, px), mode=mode, num_inference_steps=steps, seed=0, output_type="pt",
                 chunk_size=chunk, offload_text_encoder=device.type == "cuda")
            _sync(device)
            seconds = time.perf_counter() - start
            flops = call_flops.get(name, 0.0) * steps * (frames // 4)
            tflops = flops / 1e12 / seconds if flops else None
            rows.append({"section": "sampling", "case": label, "variant": name, "seconds": seconds,
                         "peak_GB": _peak_gb(device), "TFLOP": flops / 1e12 if flops else None, "TFLOP/s": tflops,
                         "pct_of_peak": None if peak is None or tflops is None else 100 * tflops / peak,
                         "note": f"{steps} steps, CFG 4.5, T5 offloaded; TFLOP/s over the whole story"})
    del pipe
    return rows


def attention(device, quick: bool) -> list[dict]:
    from bench import attention as attention_bench

    args = attention_bench.make_parser().parse_args(["--quick"] if quick else ["--full-size"])
    args.device = device.type
    rows = []
    for row in attention_bench.run(args)["rows"]:
        best = row.get("best")
        times = ", ".join(f"{b} {format_value(row.get(b + '_s'))}" for b in attention_bench.SPARSE)
        rows.append({"section": "attention", "case": f"{row['frames']} frames x {row['tokens']} tokens",
                     "variant": f"coverage {row['coverage']}", "seconds": row.get("sparse_s"),
                     "note": f"best {best} (dense {format_value(row.get('dense_s'))}; {times})"})
    return rows


def trainer_step(device, dtype, quick: bool) -> list[dict]:
    """Stage 2: the global branch frozen, AdamW on the subject branch, gradient checkpointing, bf16 autocast."""
    from bench.model import MEDIUM, XL, Case, build

    config, latent = (({**MEDIUM, "num_layers": 2}, 32) if quick else (XL, 64))
    model = build(config, latent, device, torch.float32)
    case = Case(model, 8, latent, cfg=False, device=device, dtype=torch.float32)  # 2 stories x 4 frames
    subject = case.subject(0.25)  # packing and projected captions, once (float32)
    model.transformer.to(dtype).requires_grad_(False)  # frozen global branch in bf16
    model.enable_gradient_checkpointing()
    model.train()
    params = [p for p in model.subject_branch.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.03)
    target = torch.randn(case.batch, 8, latent, latent, device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype):
            out = model(case.x.to(dtype), case.text.to(dtype), case.t, case.added, case.mask, subject=subject).sample
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    _peak_reset(device)
    repeats = 2 if quick else 5
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    return [{"section": "trainer", "case": f"stage 2, {latent * 8}px, 2 stories x 4 frames", "variant": "grad ckpt",
             "seconds": seconds, "peak_GB": _peak_gb(device), "note": f"{1 / seconds:.2f} steps/s"}]


def run(args) -> dict:
    device = prepare(args)
    if device.type != "cuda" and not args.quick:
        raise ValueError("device: bench.gpu needs CUDA (use --quick to check the script on CPU)")
    dtype = torch.bfloat16  # also for --quick on CPU, so the check runs the same dtype paths
    budget = Budget(args.budget_s)
    peak = peak_tflops(device, args.peak_tflops)
    rows = []
    if device.type == "cuda":
        rows += cuda_tests(args.quick)
    calls: list[dict] = []
    sections = (("model call", lambda: calls.extend(model_calls(device, dtype, args.quick, peak)) or calls),
                ("sampling", lambda: sampling(device, dtype, args.quick, budget,
                                              {r["variant"]: r["TFLOP"] * 1e12 for r in calls}, peak)),
                ("attention", lambda: attention(device, args.quick)),
                ("trainer", lambda: trainer_step(device, dtype, args.quick)))
    for name, section in sections:
        if budget.left() <= 0 and not args.quick:
            rows.append({"section": name, "note": "skipped: time budget"})
            continue
        rows += section()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (quick check)"
    return {"title": f"Lay2Story on {gpu}", "columns": COLUMNS, "rows": rows,
            "notes": [f"pct_of_peak against {peak} TFLOP/s dense bf16" if peak else "no peak known for this device",
                      f"wall time {time.perf_counter() - budget.start:.0f} s (budget {args.budget_s:.0f} s)",
                      "peak_GB: torch.cuda.max_memory_allocated (tensors; the CUDA context and the caching "
                      "allocator's reserve come on top)"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting new cases after this")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU (default: known)")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
