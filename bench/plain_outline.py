"""Does the plain global branch keep an outline it is shown? Sampling started from the ground truth, noised part way.

    python -m bench.plain_outline [--quick] [--json PATH] [--model DIR] [--starts 0,0.375,0.625,0.75,0.875]

Issue 24's diagnosis of the demo's plain branch (mode ``none``: the global branch alone), on held-out one-character
ShapeStory stories: each story's ground-truth frames are encoded by the model's VAE, noised to the start step (a
share of the model's steps; SDEdit, Meng et al. 2022), and sampled from there to the end with the model's sampler
and guidance, no subject branch; then scored like ``bench.shapestory`` scores layout off (no boxes: each character
is its largest blob of its colour). The first row (start 0) is ordinary sampling from pure noise, the same frames
``StoryPipeline(..., mode="none")`` gives for the same seed (tested); ``x_shape`` is each row's shape accuracy over
it. A good denoiser keeps the outline from a late start (the ground truth is still plainly there); if shape stays
low even from a late start, the outline is lost by the denoiser itself, not by where or how big sampling chose to
draw the character.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from bench.common import bench_parser, parse_numbers, prepare, run_and_report
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines import scheduler_label
from lay2story_core.pipelines.images import to_pil, to_tensor_image
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import render_story, score_story, summarize
from lay2story_core.shapestory.protocol import stories_with_characters

COLUMNS = ["start", "start_step", "timestep", "colour_accuracy", "shape_accuracy", "pattern_accuracy", "present",
           "x_shape"]


def start_step(share: float, num_steps: int) -> int:
    """The step sampling starts at for a share of the steps in [0, 1)."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
        raise ValueError(f"--starts: expected shares of the steps in [0, 1), got {share!r}")
    return min(int(round(share * num_steps)), num_steps - 1)


@torch.no_grad()
def sample_from_truth(pipe, story, start: int, num_steps: int, guidance_scale: float, seed: int) -> list:
    """The story's frames sampled with the global branch alone from step ``start``: pure noise at 0 (the initial
    noise and step noise the pipeline draws for ``seed``), else the ground truth's latents plus that noise at the
    start step's sigma."""
    device, dtype = pipe._execution_device, pipe.transformer.dtype
    generator = torch.Generator("cpu").manual_seed(seed)
    width, height = story.width, story.height
    latents = pipe.prepare_latents(story.num_frames, height, width, generator, device, dtype,
                                   num_inference_steps=num_steps)
    scheduler = pipe.prepared_scheduler(num_steps, device)
    if start > 0:  # the ground truth noised to the start step with the same noise; the scheduler steps on from there
        pixels = torch.stack([to_tensor_image(im.convert("RGB"), height, width) for im in render_story(story)[0]])
        clean = pipe.encode_pixels(pixels.to(device=device, dtype=pipe.vae.dtype)).to(dtype)
        scheduler.set_begin_index(start)
        noise = latents / scheduler.init_noise_sigma
        latents = scheduler.add_noise(clean, noise, scheduler.timesteps[start:start + 1])
    texts = [story.global_caption(f) for f in range(story.num_frames)]
    do_cfg = guidance_scale > 1.0
    embeds, mask = pipe.encode_prompt(texts + [story.negative_prompt] * len(texts) if do_cfg else texts, device)
    added = pipe._added_cond(embeds.shape[0], height, width, device, dtype)
    model = pipe._model()
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps[start:]:
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]) if do_cfg else latents, t)
        noise = model(model_in, embeds, t.expand(model_in.shape[0]).to(device), added, mask).sample
        noise = noise[:, : latents.shape[1]]
        if do_cfg:
            cond, uncond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(noise.float(), t, latents.float(), **step_kwargs).prev_sample.to(dtype)
    return to_pil(pipe.decode_latents(latents))


def measure(model_dir, starts, count: int, steps: int | None, seed: int, device) -> tuple[list, dict]:
    pipe = load_story_pipeline(model_dir, subject_branch=None).to(device)
    num_steps, cfg = pipe.sampling_defaults.resolve(steps, None)
    stories = stories_with_characters(count, 1, seed, "test")
    timesteps = pipe.prepared_scheduler(num_steps).timesteps
    rows = []
    for share in dict.fromkeys([0.0, *starts]):
        start = start_step(share, num_steps)
        scores = [score_story(sample_from_truth(pipe, story, start, num_steps, cfg, seed + i),
                              story.with_layout(boxes=False)) for i, story in enumerate(stories)]
        s = summarize(scores)
        row = {"start": share, "start_step": start, "timestep": int(timesteps[start]),
               **{k: s[k] for k in ("colour_accuracy", "shape_accuracy", "pattern_accuracy", "present")}}
        base = rows[0]["shape_accuracy"] if rows else row["shape_accuracy"]
        row["x_shape"] = float(np.divide(row["shape_accuracy"], max(base, 1e-9)))
        rows.append(row)
    return rows, {"steps": num_steps, "cfg": cfg, "scheduler": scheduler_label(pipe.scheduler)}


def run(args) -> dict:
    device = prepare(args)
    count = args.stories or (2 if args.quick else 8)
    steps = args.steps or (4 if args.quick else None)
    starts = parse_numbers(args.starts, "--starts")
    rows, info = measure(args.model, starts, count, steps, args.seed, device)
    return {"title": f"Plain global branch sampled from the ground truth noised part way ({count} held-out "
                     f"one-character stories, {info['scheduler']}, {info['steps']} steps, CFG {info['cfg']:g}, "
                     f"{device}; start 0 = pure noise, same run)",
            "columns": COLUMNS, "rows": rows,
            "notes": ["start: share of the steps skipped (the ground truth noised to that step's sigma); x_shape: "
                      "shape accuracy over the start-0 row",
                      "scored without boxes, as bench.shapestory scores layout off"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(EMBEDDED_MODEL), help="pipeline folder (default: embedded demo)")
    parser.add_argument("--starts", default="0.375,0.625,0.75,0.875",
                        help="shares of the steps to start at, comma-separated (0 is always measured first)")
    parser.add_argument("--stories", type=int, default=None, help="one-character stories (default 8; quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's; quick 4)")
    parser.add_argument("--seed", type=int, default=3100, help="first story seed and sampling seed")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
