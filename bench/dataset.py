"""Dataset builder throughput: frames/s per stage, and the whole build on one process vs local Ray (1 and 2 workers).

    python -m bench.dataset [--quick] [--json PATH] [--threads N] [--videos N] [--seconds S] [--size WxH]
                            [--real-size] [--no-ray]
    python -m bench.dataset --gpu [--json PATH]   # Grounding DINO-T and CLIP ViT-L/14, batch 16, bf16 (<= 5 min)

Part "stage": the stage functions of ``training/data/process.py`` timed one by one on the same synthetic videos
(decode = PyAV decode + 0.25 fps sampling + size filter; screen = CLIP embeddings; detect = Grounding DINO; finish =
k-means, grouping, template captions, image writing). Models are tiny random ones (the pipeline's own cost), or with
``--real-size`` random weights at the real architectures (Grounding DINO-T: Swin-T + BERT-base, 800 px; CLIP
ViT-L/14 at 224 px), which is what the per-frame cost of a real build is, with their GFLOP per frame.
Part "engine": the whole build of the same videos with the local engine in this process (the baseline), then local
Ray with 1 and 2 workers (each model stage an actor pool of that size); ``ratio`` is the baseline's time over the
row's (> 1 = faster). Ray times include starting the actors.
Part "gpu" (``--gpu``): frames/s of the two real-size models at batch 16 in bf16 on CUDA, processor included and
model only, each measured for a fixed time budget.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import torch

from bench.common import bench_parser, run_and_report

TITLE = "Dataset builder throughput"
COLUMNS = ["part", "stage", "engine", "workers", "frames", "seconds", "frames_per_s", "ratio", "gflop_per_frame"]
SIZE_720P = (1280, 720)


# ------------------------------------------------------------------------------------------------------- models
def real_size_models(device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Grounding DINO-T and CLIP ViT-L/14 (vision tower + projection) with random weights, at their real sizes."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
    )
    from transformers.models.grounding_dino import GroundingDinoImageProcessorPil

    from lay2story_core.vision import ClipEmbedder, GroundingDinoDetector
    from lay2story_core.vision.tiny import _bert_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dino = GroundingDinoForObjectDetection(GroundingDinoConfig()).to(device, dtype)  # the defaults are DINO-T
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
            patch_size=14, projection_dim=768)).to(device, dtype)
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(), tokenizer=_bert_tokenizer())
    detector = GroundingDinoDetector(dino, processor, torch.device(device), dtype)
    embedder = ClipEmbedder(clip, CLIPImageProcessorPil(size={"shortest_edge": 224},
                                                        crop_size={"height": 224, "width": 224}),
                            None, torch.device(device), dtype)
    return detector, embedder


def _frames(n: int, size=SIZE_720P):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


# ------------------------------------------------------------------------------------------------------ part gpu
def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, frames_per_call: int, budget_s: float, device: str) -> tuple[int, float]:
    fn()  # warm-up (cuDNN / kernel selection)
    _sync(device)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < budget_s:
        fn()
        calls += 1
    _sync(device)
    return calls * frames_per_call, time.perf_counter() - start


def gpu_rows(detector, embedder, device: str, dtype: torch.dtype, batch: int, budget_s: float) -> list[dict]:
    """frames/s of detection and CLIP embedding on ``batch`` random 720p frames, processor included and model
    only, each timed for ``budget_s`` seconds after one warm-up call."""
    images = _frames(batch)
    dino_inputs = detector.processor(images=images, text=["the main character."] * batch, return_tensors="pt",
                                     padding=True)
    dino_inputs = {k: v.to(device) for k, v in dino_inputs.items()}
    dino_inputs["pixel_values"] = dino_inputs["pixel_values"].to(dtype)
    clip_pixels = embedder.image_processor(images=images, return_tensors="pt").pixel_values.to(device, dtype)
    clip_forward = getattr(embedder.model, "get_image_features", embedder.model)  # CLIPModel or the vision tower
    cases = {
        ("detect", "processor + model"): lambda: detector.detect(images, "the main character", 0.35, 0.25, batch),
        ("detect", "model only"): lambda: detector.model(**dino_inputs),
        ("screen", "processor + model"): lambda: embedder.embed_images(images, batch_size=batch),
        ("screen", "model only"): lambda: clip_forward(pixel_values=clip_pixels),
    }
    rows = []
    with torch.inference_mode():
        for (stage, what), fn in cases.items():
            frames, seconds = _rate(fn, batch, budget_s, device)
            rows.append({"part": "gpu", "stage": f"{stage} ({what})", "engine": f"{str(dtype)[6:]} batch {batch}",
                         "workers": 1, "frames": frames, "seconds": seconds, "frames_per_s": frames / seconds})
    return rows


def run_gpu(args) -> dict:
    if not torch.cuda.is_available():
        raise ValueError("gpu: --gpu needs CUDA; this machine has none")
    detector, embedder = real_size_models("cuda", torch.bfloat16)
    rows = gpu_rows(detector, embedder, "cuda", torch.bfloat16, 16, 10.0 if args.quick else 40.0)
    return {"title": f"{TITLE}: real-size models on {torch.cuda.get_device_name()}", "columns": COLUMNS,
            "rows": rows, "input": "1280x720 random frames; Grounding DINO-T at 800 px shortest side"}


# ---------------------------------------------------------------------------------------------------- part stage
def _make_videos(root: str, count: int, seconds: float, size: tuple[int, int]) -> None:
    from training.data.video import write_synthetic_video

    for k in range(count):
        write_synthetic_video(os.path.join(root, f"v{k:02d}.mp4"), seconds, fps=24, size=size,
                              colour=(40 * k % 255, 200, 90), seed=k)


def _stage_rows(config, models, count_flops: bool = False) -> list[dict]:
    """Per-stage frames/s (and, with ``count_flops``, GFLOP per frame of the model stages, counted by torch's FLOP
    counter on the timed calls themselves)."""
    import contextlib

    from torch.utils.flop_counter import FlopCounterMode

    from training.data.build import list_tasks
    from training.data.process import (
        VideoResult,
        WindowDedup,
        caption_sequences,
        decode_chunks,
        detect_chunk,
        plan_sequences,
        screen_chunk,
        video_seed,
        write_stories,
    )
    from training.data.video import FrameSampler, VideoError

    totals = {s: [0, 0.0] for s in ("decode (frames decoded)", "decode + sample", "screen", "detect", "finish")}
    flops = {"screen": 0, "detect": 0}

    def counted(stage):
        return FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()

    def add(stage, frames, start):
        totals[stage][0] += frames
        totals[stage][1] += time.perf_counter() - start

    for task in list_tasks(config):
        start = time.perf_counter()
        sampler = FrameSampler(task.path, config.fps)
        for _ in sampler:
            pass
        add("decode (frames decoded)", sampler.info.decoded, start)
        result = VideoResult(task.video_id, task.rel_path)
        start = time.perf_counter()
        chunks = list(decode_chunks(task.path, config, result))
        add("decode + sample", result.frames["sampled"], start)
        start = time.perf_counter()
        with counted("screen") as counter:
            chunks = [screen_chunk(c, config, models, result) for c in chunks]
        add("screen", result.frames["size_filtered"], start)
        flops["screen"] += counter.get_total_flops() if count_flops else 0
        start = time.perf_counter()
        with counted("detect") as counter:
            chunks = [detect_chunk(c, config, models, result) for c in chunks]
        add("detect", result.frames["filtered"], start)
        flops["detect"] += counter.get_total_flops() if count_flops else 0
        start = time.perf_counter()
        dedup = WindowDedup(config, video_seed(config.seed, task.video_id))
        for chunk in chunks:
            dedup.add(chunk)
        kept = dedup.finish(result)
        try:
            plans = plan_sequences(task.video_id, kept, config, result)
        except VideoError:  # too few frames for a sequence (--real-size keeps only a few)
            continue
        write_stories(task.video_id, kept, caption_sequences(kept, plans, models.captioner, result, task.rel_path),
                      config, result)
        add("finish", result.frames["detected"], start)
    rows = [{"part": "stage", "stage": stage, "engine": "one process", "workers": 1, "frames": frames,
             "seconds": seconds, "frames_per_s": frames / seconds if seconds else float("nan")}
            for stage, (frames, seconds) in totals.items() if frames]
    for row in rows:
        if count_flops and row["stage"] in flops:
            row["gflop_per_frame"] = flops[row["stage"]] / row["frames"] / 1e9
    return rows


def _engine_rows(config, models, with_ray: bool) -> list[dict]:
    from training.data.build import build_dataset

    runs = [("local", 1)] + ([("ray", 1), ("ray", 2)] if with_ray else [])
    rows, baseline = [], None
    for engine, workers in runs:
        out = tempfile.mkdtemp(prefix=f"bench-dataset-{engine}{workers}-")
        try:
            work = config.replace(out=out, engine=engine, workers=workers)
            start = time.perf_counter()
            stats = build_dataset(work, models=models if engine == "local" else None)["stats"]
            seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(out, ignore_errors=True)
        baseline = baseline or seconds
        rows.append({"part": "engine", "stage": "whole build", "engine": engine if engine == "local" else "local Ray",
                     "workers": workers, "frames": stats["frames"]["sampled"], "seconds": seconds,
                     "frames_per_s": stats["frames"]["sampled"] / seconds, "ratio": baseline / seconds})
    if with_ray:
        import ray

        ray.shutdown()
    return rows


def run(args) -> dict:
    if args.gpu:
        return run_gpu(args)
    from bench.common import prepare
    from lay2story_core.vision.tiny import save_tiny_clip, save_tiny_grounding_dino
    from training.data.config import BuildConfig
    from training.data.process import Models, build_captioner, load_models

    prepare(args)
    logging.getLogger("training.data").setLevel(logging.WARNING)
    width, height = (int(v) for v in args.size.lower().split("x"))
    count = args.videos or (1 if args.real_size or args.quick else 4)
    seconds = args.seconds or (24.0 if args.quick else 120.0)
    root = tempfile.mkdtemp(prefix="bench-dataset-")
    try:
        videos = os.path.join(root, "videos")
        os.makedirs(videos)
        _make_videos(videos, count, seconds, (width, height))
        detector = save_tiny_grounding_dino(os.path.join(root, "gdino"))
        clip = save_tiny_clip(os.path.join(root, "clip"))
        config = BuildConfig(videos=videos, out=os.path.join(root, "out"), detector=detector, clip=clip,
                             min_size=min(width, height), box_threshold=0.0, text_threshold=0.0, progress=False,
                             threads=max(1, torch.get_num_threads() // 2), cpus_per_worker=0.5)
        if args.real_size:  # a few frames: minutes per frame on a CPU
            config = config.replace(max_frames_per_video=args.real_frames)
            real_detector, real_clip = real_size_models()
            models = Models(real_detector, real_clip, build_captioner(config))
        else:
            models = load_models(config)
        rows = _stage_rows(config.replace(out=os.path.join(root, "stage")), models, count_flops=args.real_size)
        if not args.real_size:  # a real-size whole build would take hours on a CPU
            rows += _engine_rows(config, models, with_ray=not args.no_ray)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"title": f"{TITLE} ({'real-size random' if args.real_size else 'tiny random'} models, CPU)",
            "columns": COLUMNS, "rows": rows,
            "input": f"{count} synthetic videos of {seconds:g} s at 24 fps, {width}x{height}; 0.25 fps sampling"}


def build_parser():
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=0, help="synthetic videos (default 4; 2 with --quick)")
    parser.add_argument("--seconds", type=float, default=0.0, help="length of each (default 120; 24 with --quick)")
    parser.add_argument("--size", default="1280x720", help="frame size WxH (default 1280x720)")
    parser.add_argument("--real-size", action="store_true", help="per-stage part with real-size random models")
    parser.add_argument("--real-frames", type=int, default=1, help="--real-size: frames per video (default 1)")
    parser.add_argument("--no-ray", action="store_true", help="skip the local Ray runs")
    parser.add_argument("--gpu", action="store_true", help="real-size models on CUDA, batch 16, bf16 (<= 5 min)")
    return parser


def main(argv=None) -> dict:
    return run_and_report(run, build_parser(), argv)


if __name__ == "__main__":
    main()
