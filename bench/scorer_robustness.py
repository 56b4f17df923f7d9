"""How steady are ShapeStory's identity scores on frames known to be right? The ceiling, perturbed slightly.

    python -m bench.scorer_robustness [--quick] [--json PATH] [--model DIR] [--noise 2,4,8] [--blur 0.6]
                                      [--brightness 0.95,1.05] [--stories N] [--seed 1000]

``bench.shapestory``'s stories with two and three characters (``--stories`` per count, its seeds), training and
held-out characters: each story's ground truth encoded and decoded by the model's VAE (the bench's ceiling row),
then perturbed by what a model's frames differ by and an eye does not see: Gaussian pixel noise of standard
deviation ``--noise`` (0..255 scale, a fixed seed), a Gaussian blur of radius ``--blur`` pixels, a brightness
scale ``--brightness``. Each is scored as the bench scores layout off: ``identity_anywhere`` (each subject matched to
a blob drawn anywhere by colour, shape and pattern). The first row of each split is the unperturbed ceiling;
``x_anywhere`` is a row's figure over it; ``worst_story`` names the story that lost most (``count/index: right /
subjects``). A scorer that reads right frames steadily keeps ``x_anywhere`` near 1: where it does not, a model's
figure on those stories says as much about the scorer as about the model (issue 24's auto-layout bar on training
characters, ``training/shapestory/README.md``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from bench.common import bench_parser, parse_numbers, prepare, run_and_report
from bench.shapestory import vae_round_trip
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import render_story
from lay2story_core.shapestory.metrics import identity_anywhere
from lay2story_core.shapestory.protocol import stories_with_characters

COLUMNS = ["split", "perturbation", "identity_anywhere", "x_anywhere", "stories_all_right", "worst_story"]
COUNTS = (2, 3)


def perturb(image: Image.Image, kind: str, amount: float, rng: np.random.Generator) -> Image.Image:
    """``image`` with pixel ``noise`` (standard deviation ``amount``), ``blur`` (radius ``amount``), ``brightness``
    (scale ``amount``) or ``none``; uint8 RGB out, clipped."""
    if kind == "none":
        return image
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(amount))
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    if kind == "noise":
        pixels = pixels + rng.normal(0.0, amount, pixels.shape)
    elif kind == "brightness":
        pixels = pixels * amount
    else:
        raise ValueError(f"perturbation: expected none, noise, blur or brightness, got {kind!r}")
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def measure(model_dir, perturbations: list[tuple[str, float]], count: int, seed: int, device) -> list[dict]:
    pipe = load_story_pipeline(model_dir, subject_branch=None).to(device)
    rows = []
    for split in ("train", "test"):
        stories = [(n, i, s) for n in COUNTS for i, s in enumerate(stories_with_characters(count, n, seed + 100 * n,
                                                                                           split))]
        ceiling = [vae_round_trip(pipe, render_story(s)[0]) for _, _, s in stories]
        base = None
        for kind, amount in [("none", 0.0), *perturbations]:
            rng = np.random.default_rng(seed)  # the same noise for every model and run
            hits = [identity_anywhere([perturb(im, kind, amount, rng) for im in frames], s)
                    for (_, _, s), frames in zip(stories, ceiling)]
            flat = [h for story_hits in hits for h in story_hits]
            score = float(np.mean(flat))
            base = score if base is None else base
            lost = [len(h) - sum(h) for h in hits]
            worst = int(np.argmax(lost))
            n, i, _ = stories[worst]
            rows.append({"split": "held-out" if split == "test" else split,
                         "perturbation": "none (ceiling)" if kind == "none" else f"{kind} {amount:g}",
                         "identity_anywhere": score, "x_anywhere": score / max(base, 1e-9),
                         "stories_all_right": f"{sum(x == 0 for x in lost)}/{len(stories)}",
                         "worst_story": f"{n}/{i}: {sum(hits[worst])}/{len(hits[worst])}" if lost[worst] else "-"})
    return rows


def run(args) -> dict:
    device = prepare(args)
    count = args.stories or (1 if args.quick else 8)
    perturbations = [("noise", v) for v in parse_numbers(args.noise, "--noise") if v > 0]
    perturbations += [("blur", v) for v in parse_numbers(args.blur, "--blur") if v > 0]
    perturbations += [("brightness", v) for v in parse_numbers(args.brightness, "--brightness") if v > 0]
    rows = measure(args.model, perturbations, count, args.seed, device)
    return {"title": f"ShapeStory's identity_anywhere on the ground truth through the VAE, perturbed ({count} "
                     f"stories per character count {COUNTS}, seed {args.seed}, {device}; each split's first row is "
                     f"the unperturbed ceiling, same run)",
            "columns": COLUMNS, "rows": rows,
            "notes": ["noise: Gaussian pixel noise, standard deviation on the 0..255 scale; blur: Gaussian radius in "
                      "pixels; brightness: pixel scale",
                      "x_anywhere: the row's identity_anywhere over the split's ceiling; worst_story: count/index of "
                      "the story that lost most, its subjects read right / all"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(EMBEDDED_MODEL), help="pipeline folder whose VAE decodes (default: "
                        "embedded demo)")
    parser.add_argument("--noise", default="2,4,8", help="pixel-noise deviations, comma-separated (0..255 scale)")
    parser.add_argument("--blur", default="0.6", help="Gaussian blur radii in pixels, comma-separated")
    parser.add_argument("--brightness", default="0.95,1.05", help="brightness scales, comma-separated")
    parser.add_argument("--stories", type=int, default=None, help="stories per character count (default 8; quick 1)")
    parser.add_argument("--seed", type=int, default=1000, help="bench.shapestory's story seed (and the noise's)")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
