"""ShapeStory: does layout work? Box hit, identity consistency and prompt following on held-out stories.

    python -m bench.shapestory [--quick] [--json PATH] [--model DIR] [--stories N] [--steps N]

Renders held-out ShapeStory stories (test split: unseen colour/shape/pattern combinations) with the embedded demo
model (or ``--model``) in four ways and scores them with the model-free metrics of
:mod:`lay2story_core.shapestory.metrics`:

* Lay2Story, layout on (boxes + subject captions + the character's reference);
* Lay2Story, layout off (same model, no boxes, no subject captions: the paper's "w/o lc");
* training-free on the stage-1 (global-branch-only) model: consistent self-attention + regional captions;
* the plain global branch (``mode="none"``), the baseline;

plus the ground-truth renders (the metric's own ceiling). Box hit is measured against the story's boxes in every row,
so rows without layout show where the character lands by chance.
"""

from __future__ import annotations

import time

from bench.common import bench_parser, prepare, ratio, run_and_report
from lay2story_core.cli import EMBEDDED_MODEL
from lay2story_core.pipelines import ReferenceImage
from lay2story_core.pipelines.loading import load_story_pipeline
from lay2story_core.shapestory import generate_story, render_reference, render_story, score_story, summarize

COLUMNS = ["variant", "box_hit", "box_success", "present", "identity_consistency", "colour_accuracy",
           "shape_accuracy", "prompt_following", "s_per_story", "box_success_vs_off"]
VARIANTS = (
    ("Lay2Story layout on", "lay2story", True, True),
    ("Lay2Story layout off", "lay2story", False, True),
    ("training-free (stage-1 model)", "training_free", True, False),
    ("plain global branch", "none", False, False),
)


def held_out_stories(count: int, seed: int):
    return [generate_story(seed + i, split="test") for i in range(count)]


def references(story):
    return {c.id: ReferenceImage(render_reference(story, c.id)[0], c.reference.box) for c in story.characters}


def evaluate(model_dir, stories, steps: int, cfg: float, seed: int, device, variants=VARIANTS) -> list[dict]:
    full = load_story_pipeline(model_dir).to(device)
    stage1 = load_story_pipeline(model_dir, subject_branch=None).to(device)
    rows = [{"variant": "ground truth renders", **summarize([score_story(render_story(s)[0], s) for s in stories])}]
    for name, mode, layout, uses_branch in variants:
        pipe = full if uses_branch else stage1
        scores, start = [], time.perf_counter()
        for i, story in enumerate(stories):
            images = pipe(story, mode=mode, layout=layout, subject_captions=layout,
                          references=references(story) if mode == "lay2story" else None,
                          num_inference_steps=steps, guidance_scale=cfg, seed=seed + i).images
            scores.append(score_story(images, story))
        seconds = (time.perf_counter() - start) / len(stories)
        rows.append({"variant": name, **summarize(scores), "s_per_story": seconds})
    off = next((r for r in rows if r["variant"] == "Lay2Story layout off"), None)
    for row in rows:
        if off is not None and row.get("box_success") is not None:
            row["box_success_vs_off"] = ratio(row["box_success"], max(off["box_success"] or 0.0, 1e-9))
    return rows


def run(args) -> dict:
    device = prepare(args)
    count = args.stories or (4 if args.quick else 48)
    steps = args.steps or (8 if args.quick else 20)
    rows = evaluate(args.model, held_out_stories(count, args.seed), steps, args.cfg, args.seed, device)
    return {"title": f"ShapeStory held-out stories ({count} stories, {steps} steps, CFG {args.cfg}, {device})",
            "columns": COLUMNS, "rows": rows,
            "notes": ["box_success = share of subjects with >= 80% of their pixels inside the requested box",
                      "box_success_vs_off = box_success / that of Lay2Story with layout off (same model)"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(EMBEDDED_MODEL), help="pipeline folder (default: embedded demo)")
    parser.add_argument("--stories", type=int, default=None, help="held-out stories (default 48; quick 4)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 20; quick 8)")
    parser.add_argument("--cfg", type=float, default=3.0, help="guidance scale (default 3)")
    parser.add_argument("--seed", type=int, default=1000, help="first story seed and sampling seed")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
