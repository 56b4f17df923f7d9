"""ShapeStory: does Lay2Story work? The paper's ablations, the demo's bars, and a picture, from one model in one run.

    python -m bench.shapestory [--quick] [--json PATH] [--grid PNG] [--model DIR] [--stories N] [--steps N]

Everything is scored with the model-free metrics of :mod:`lay2story_core.shapestory` (no learned judge), on stories
of the held-out characters (unseen colour/shape/pattern combinations) unless a row says "train characters":

* **Ablations** (the main table, the paper's Table 4 on ShapeStory): full Lay2Story (layout + subject captions +
  reference); no subject branch (the global branch alone: the same weights as "plain"); no reference; no masked 3D
  attention (each frame's subject tokens attend within their own frame); layout off as the paper has it ("w/o lc":
  no boxes at all) and as a user gets it (auto layout: the model places each character in its first steps and the
  subject branch draws it there, :mod:`lay2story_core.pipelines.auto_layout`); training-free consistency on the
  global branch, without and with box control (``box_strength`` 0.875); plain. Columns: box success (stories with 1, 2
  and 3 characters), identity (colour / shape / pattern accuracy, and identity anywhere: characters of multi-character
  frames drawn somewhere with their own colour, shape and pattern, whatever the box), attribute agreement and
  reference match (the consistency protocol: identity texts that leave the colour, or everything, unnamed; see
  :mod:`lay2story_core.shapestory.protocol`), prompt following (the scene), seconds per story.
* **Bars**: layout on, for training and held-out characters: box success per character count, presence,
  colour/shape/pattern accuracy, scene, and the share of subjects of multi-character frames drawn in their own box
  with their own identity, and identity anywhere (the same without the box: layout off is judged by it); layout
  off (auto layout and w/o lc), the plain global branch and training-free consistency (without and with box control)
  beside it, and the one-character stories of layout off and the plain branch alone (the bars set on them). Rows
  sampled with layout off are scored without boxes (no box success; each character is read off its largest blob of
  its colour), since no box was asked for.
* **Ceiling**: the ground truth encoded and decoded by the model's VAE, scored the same way: what any latent model
  with this VAE can reach at best (small characters lose shape and pattern detail in a 4x VAE's 16x16 latents).
* **Sampling**: the model's sampler (its scheduler folder; the demo: euler_a), recommended steps and guidance
  scale (its ``lay2story.json``; the demo: 16 steps, CFG 2) unless ``--steps`` / ``--cfg`` say otherwise; the
  title says which.
* **Size**: 8 stories per character count for each split and 16 consistency-protocol stories (``--stories``; about
  10 minutes on 2 CPU cores). At 4 per count the training-character figures moved by about +-0.05 with the sampling
  noise alone, too much to judge a bar by.
* **Grid** (``--grid``): reference | ground truth | layout on | layout off (auto layout) | w/o lc | training-free
  with box control, the story's boxes outlined, for a few held-out stories, upscaled with nearest-neighbour so 64 px
  frames are readable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import bench_parser, prepare, run_and_report
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.consistency import ConsistencyConfig
from lay2story_core.pipelines import ReferenceImage, scheduler_label
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import render_reference, render_story, score_story, summarize
from lay2story_core.shapestory.metrics import identity_anywhere
from lay2story_core.shapestory.protocol import attribute_agreement, partial_stories, stories_with_characters

IDENTITY_COLUMNS = ["colour_accuracy", "shape_accuracy", "pattern_accuracy", "identity_anywhere"]
ABLATION_COLUMNS = ["variant", "box_success", "box_success_1", "box_success_2", "box_success_3", *IDENTITY_COLUMNS,
                    "agreement", "reference_match", "prompt_following", "s_per_story"]
BAR_COLUMNS = ["characters", "variant", "box_success", "box_success_1", "box_success_2", "box_success_3", "present",
               *IDENTITY_COLUMNS[:3], "prompt_following", "own_box_and_identity", IDENTITY_COLUMNS[3]]


@dataclass(frozen=True)
class Variant:
    """One way of sampling a story with the demo model."""

    name: str
    mode: str = "lay2story"
    layout: bool = True
    reference: bool = True
    attention_3d: bool = True
    consistency: ConsistencyConfig | None = None
    auto_layout: bool = False  # lay2story mode with layout off: let the model place the characters

    def call_kwargs(self, truth) -> dict:
        """Pipeline arguments; references are drawn from ``truth`` (the story with every attribute named)."""
        refs = references(truth) if self.mode == "lay2story" and self.reference else None
        kwargs = {"mode": self.mode, "layout": self.layout, "subject_captions": self.layout, "references": refs,
                  "auto_layout": self.auto_layout}
        if not self.attention_3d:
            kwargs["attention_3d"] = False
        if self.consistency is not None:
            kwargs["consistency"] = self.consistency
        return kwargs


FULL = Variant("Lay2Story (full)")
LAYOUT_OFF = Variant("w/o layout (lc off)", layout=False)
AUTO_LAYOUT = Variant("layout off, auto layout", layout=False, auto_layout=True)
TRAINING_FREE = Variant("training-free (global branch)", mode="training_free",
                        consistency=ConsistencyConfig(rate=1.0, blocks="all"))
# the box-control row's strength: chosen on held-out stories this bench does not use (seed 4000; README, "Training-free
# layout"); the library default stays 0 (opt-in)
BOX_CONTROL_STRENGTH = 0.875
TRAINING_FREE_BOXES = Variant("training-free + box control", mode="training_free",
                              consistency=ConsistencyConfig(rate=1.0, blocks="all", box_strength=BOX_CONTROL_STRENGTH))
PLAIN = Variant("plain global branch = w/o subject branch", mode="none", layout=False)
ABLATIONS = (
    FULL,
    Variant("w/o reference", reference=False),
    Variant("w/o masked 3D attention", attention_3d=False),
    LAYOUT_OFF,
    AUTO_LAYOUT,
    # every block, every candidate token: measured on training-split protocol stories (agreement, plain 0.13):
    # StoryDiffusion's second half of the blocks at rate 0.5 gives 0.19, rate 1 0.21, all blocks 0.32, both 0.44;
    # box control at its default strength (bench/box_control.py)
    TRAINING_FREE,
    TRAINING_FREE_BOXES,
    PLAIN,
)
# the bars' rows beside layout on (held-out characters): bars-table name -> ablation variant
BAR_VARIANTS = {"layout off (auto layout)": AUTO_LAYOUT, "layout off (w/o lc)": LAYOUT_OFF, "plain": PLAIN,
                "training-free": TRAINING_FREE, "training-free + box control": TRAINING_FREE_BOXES}


def vae_round_trip(pipe, images) -> list:
    """``images`` encoded by the pipeline's VAE and decoded by its sampling path (:meth:`decode_latents`): the best
    frames a latent model of this VAE can draw, so its scores are the ceiling of every model row."""
    import torch

    from lay2story_core.pipelines.images import to_pil, to_tensor_image

    with torch.no_grad():
        pixels = torch.stack([to_tensor_image(im, im.height, im.width) for im in images])
        return to_pil(pipe.decode_latents(pipe.encode_pixels(pixels.to(pipe.vae.device, pipe.vae.dtype))).cpu())


def references(story) -> dict:
    return {c.id: ReferenceImage(render_reference(story, c.id)[0], c.reference.box) for c in story.characters}


class Sampler:
    """Samples stories with one pipeline and remembers every result (rows share samples)."""

    def __init__(self, pipe, steps: int, cfg: float, seed: int) -> None:
        self.pipe, self.steps, self.cfg, self.seed = pipe, steps, cfg, seed
        self.seconds: dict[str, list[float]] = {}

    def __call__(self, variant: Variant, story, index: int, truth=None) -> list:
        start = time.perf_counter()
        images = self.pipe(story, num_inference_steps=self.steps, guidance_scale=self.cfg, seed=self.seed + index,
                           **variant.call_kwargs(truth or story)).images
        self.seconds.setdefault(variant.name, []).append(time.perf_counter() - start)
        return images


def _by_count(sampler: Sampler, variant: Variant, sets: dict[int, list]) -> tuple[dict, list]:
    """Scores per character count and all together; also the generated images of every story."""
    scores, images = {}, []
    for count, stories in sets.items():
        scores[count] = []
        for i, story in enumerate(stories):
            frames = sampler(variant, story, 100 * count + i)
            images.append((story, frames))
            # layout off: no box was asked for, so none is scored (each character is its largest blob of its colour)
            scores[count].append(score_story(frames, story if variant.layout else story.with_layout(boxes=False)))
    return _summaries(scores, images), images


def _summaries(scores: dict[int, list], images: list | None = None) -> dict:
    """Per character count, all together ("all"), the multi-character own box and identity ("own") and, given the
    ``(story, frames)`` pairs, identity anywhere ("anywhere")."""
    every = [score for per_count in scores.values() for score in per_count]
    found = [hit for story, frames in images or () for hit in identity_anywhere(frames, story)]
    return {**{count: summarize(per_count) for count, per_count in scores.items()}, "all": summarize(every),
            "own": _own_box_and_identity(every), "anywhere": float(np.mean(found)) if found else None}


def _own_box_and_identity(scores) -> float | None:
    """Subjects of frames with two or more characters that lie in their box (>= 80%) with their own colour, shape and
    pattern (no attribute leaking between characters)."""
    good = []
    for score in scores:
        per_frame: dict[int, list] = {}
        for s in score.subjects:
            if s.has_box:  # a layout-off sample asked for no box
                per_frame.setdefault(s.frame, []).append(s)
        for subjects in per_frame.values():
            if len(subjects) >= 2:
                good += [float((s.box_hit or 0.0) >= 0.8 and s.colour_ok and s.shape_ok and s.pattern_ok)
                         for s in subjects]
    return float(np.mean(good)) if good else None


def _protocol(sampler: Sampler, variant: Variant, items) -> dict:
    agree, match = [], []
    for i, item in enumerate(items):
        frames = sampler(variant, item.prompt, 10_000 + i, truth=item.truth)
        result = attribute_agreement(frames, item)
        agree.append(result["agreement"])
        match.append(result["reference_match"])
    return {"agreement": float(np.mean(agree)), "reference_match": float(np.mean(match))}


def _count_columns(summary: dict) -> dict:
    return {f"box_success_{n}": summary[n]["box_success"] for n in (1, 2, 3) if n in summary}


def evaluate(model_dir, count: int, steps: int | None, cfg: float | None, seed: int, device,
             grid: str | None = None) -> dict:
    """``steps`` / ``cfg`` ``None``: the model's recommended settings (its ``lay2story.json``, as the pipeline
    resolves them); the result says which were used."""
    full = load_story_pipeline(model_dir).to(device)
    stage1 = load_story_pipeline(model_dir, subject_branch=None).to(device)
    steps, cfg = full.sampling_defaults.resolve(steps, cfg)
    samplers = {"full": Sampler(full, steps, cfg, seed), "stage1": Sampler(stage1, steps, cfg, seed)}
    held_out = {n: stories_with_characters(count, n, seed + 100 * n, "test") for n in (1, 2, 3)}
    train = {n: stories_with_characters(count, n, seed + 100 * n, "train") for n in (1, 2, 3)}
    protocol = partial_stories(2 * count, seed + 500, "test")

    # 1. ablations on held-out characters
    ablations, pictures, held_out_scores = [], {}, {}
    for variant in ABLATIONS:
        sampler = samplers["full" if variant.mode == "lay2story" else "stage1"]
        scores, images = _by_count(sampler, variant, held_out)
        pictures[variant.name], held_out_scores[variant.name] = images, scores
        ablations.append({"variant": variant.name, "box_success": scores["all"]["box_success"],
                          **_count_columns(scores), **_identity_columns(scores),
                          **_protocol(sampler, variant, protocol),
                          "prompt_following": scores["all"]["prompt_following"],
                          "s_per_story": float(np.mean(sampler.seconds[variant.name]))})

    # 2. the bars: layout on / off (and the global branch alone, plain and training-free) for held-out and training
    # characters, beside the ground truth and what the VAE lets through
    renders = [(s, render_story(s)[0]) for ss in held_out.values() for s in ss]
    truth = {"all": summarize([score_story(frames, s) for s, frames in renders]),
             "anywhere": float(np.mean([hit for s, frames in renders for hit in identity_anywhere(frames, s)]))}
    bars = [{"characters": "held-out", "variant": "ground truth renders", **_bar(truth)}]
    for label, sets in (("held-out", held_out), ("train", train)):
        decoded = {n: [(s, vae_round_trip(full, render_story(s)[0])) for s in ss] for n, ss in sets.items()}
        ceiling = {n: [score_story(frames, s) for s, frames in pairs] for n, pairs in decoded.items()}
        bars.append({"characters": label, "variant": "ground truth through the VAE (ceiling)",
                     **_bar(_summaries(ceiling, [pair for pairs in decoded.values() for pair in pairs]))})
    bars.append({"characters": "held-out", "variant": "layout on", **_bar(held_out_scores[FULL.name])})
    bars += [{"characters": "held-out", "variant": name, **_bar(held_out_scores[variant.name])}
             for name, variant in BAR_VARIANTS.items()]
    train_scores = {name: _by_count(samplers["full" if variant.mode == "lay2story" else "stage1"], variant, train)[0]
                    for name, variant in (("layout on", FULL), ("layout off (auto layout)", AUTO_LAYOUT),
                                          ("layout off (w/o lc)", LAYOUT_OFF), ("plain", PLAIN))}
    bars += [{"characters": "train", "variant": name, **_bar(scores)} for name, scores in train_scores.items()]
    # the one-character stories alone, for the bars that are set on them (layout off and the plain branch)
    for label, scores in (("held-out", held_out_scores), ("train", train_scores)):
        for name in ("layout off (auto layout)", "layout off (w/o lc)", "plain"):
            key = BAR_VARIANTS[name].name if label == "held-out" else name
            if key in scores:
                bars.append({"characters": label, "variant": f"{name}, one character", **_bar(_one(scores[key]))})

    # 3. the picture
    if grid:
        from lay2story_core.shapestory.picture import comparison_grid

        stories = [s for s, _ in pictures[FULL.name]][::count][:4] or [s for s, _ in pictures[FULL.name]][:4]
        shown = (("layout on", FULL), ("layout off", AUTO_LAYOUT), ("w/o lc", LAYOUT_OFF),
                 ("training-free", TRAINING_FREE_BOXES))
        rows = [(story, [(label, next(f for s, f in pictures[v.name] if s is story)) for label, v in shown])
                for story in stories]
        comparison_grid(rows).save(grid)
    return {"ablations": ablations, "bars": bars, "steps": steps, "cfg": cfg,
            "scheduler": scheduler_label(full.scheduler)}


def _identity_columns(summary: dict) -> dict:
    return {**{k: summary["all"][k] for k in IDENTITY_COLUMNS[:3]}, "identity_anywhere": summary.get("anywhere")}


def _one(summary: dict) -> dict:
    """The one-character stories' part of a :func:`_summaries` result, as a summary of its own."""
    return {1: summary[1], "all": summary[1], "own": None, "anywhere": None}


def _bar(summary: dict) -> dict:
    keys = ("box_success", "present", "prompt_following")
    return {**{k: summary["all"][k] for k in keys}, **_identity_columns(summary), **_count_columns(summary),
            "own_box_and_identity": summary.get("own")}


def run(args) -> dict:
    device = prepare(args)
    count = args.stories or (2 if args.quick else 8)
    steps = args.steps or (8 if args.quick else None)  # None: the model's recommended steps (and guidance)
    if args.grid:
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    result = evaluate(args.model, count, steps, args.cfg, args.seed, device, grid=args.grid)
    steps, cfg = result["steps"], result["cfg"]
    return {"title": f"ShapeStory ablations, held-out characters ({count} stories per character count, "
                     f"{2 * count} consistency-protocol stories, {result['scheduler']}, {steps} steps, CFG {cfg}, "
                     f"{device})",
            "columns": ABLATION_COLUMNS, "rows": result["ablations"],
            "tables": [{"title": f"ShapeStory bars: layout on / off, plain and training-free, training and held-out "
                                 f"characters ({count} stories per character count)", "columns": BAR_COLUMNS,
                        "rows": result["bars"]}],
            "notes": ["box_success = share of subjects with >= 80% of their pixels inside the requested box "
                      "(_1/_2/_3: stories with that many characters)",
                      "agreement / reference_match: attributes the identity text leaves out (consistency protocol)",
                      "own_box_and_identity: subjects of multi-character frames in their box with their own "
                      "colour, shape and pattern",
                      "identity_anywhere: subjects of multi-character frames drawn somewhere in the frame with their "
                      "own colour, shape and pattern (any box: what layout off is judged by)",
                      "prompt_following: the frame's scene read back from its background"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(EMBEDDED_MODEL), help="pipeline folder (default: embedded demo)")
    parser.add_argument("--stories", type=int, default=None, help="stories per character count (default 8; quick 2)")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps (default: the model's lay2story.json, else 25; quick 8)")
    parser.add_argument("--cfg", type=float, default=None,
                        help="guidance scale (default: the model's lay2story.json, else 4.5)")
    parser.add_argument("--seed", type=int, default=1000, help="first story seed and sampling seed")
    parser.add_argument("--grid", default=None, help="write the comparison picture (PNG) here")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
