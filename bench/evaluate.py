"""Evaluate generated stories Lay2Story-Bench style and print them beside the paper's numbers.

    python -m bench.evaluate --stories bench/data/mini_prompt_set.json --generated out/mini \
        --clip models/clip-vit-large-patch14 --dreamsim models/dreamsim --inception models/fid_inception \
        [--real DIR] [--method NAME] [--json out/eval.json]

``--stories``: a prompt-set file, a story JSON file, or a folder of them (see ``lay2story_core.eval.story_set``).
``--generated``: ``DIR/<story name>/frame_000.png ...`` (+ optional ``stats.json`` with seconds / peak memory).
Backbones are read from local folders only; metrics whose backbone is not given are skipped (``-`` in the table).
FID uses ``--real`` (a folder of real images) or the stories' ground-truth frame images; without ``--inception`` it
is computed on CLIP features and labelled so. Exit status 2 with a one-line message on bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import bench_parser, prepare, run_and_report
from lay2story_core.eval import MetricModels, evaluate_set, load_stories, paper_rows
from lay2story_core.eval.paper import PAPER_MEMORY_GB, PAPER_SOURCE
from lay2story_core.eval.story_set import EvalInputError
from lay2story_core.story import LayoutError

TITLE = "Lay2Story-Bench style evaluation"
COLUMNS = ["Method", "DreamSim↓", "CLIP-I↑", "FID↓", "R@1↑", "s/story", "peak GB", "source"]
_KEYS = {
    "Method": "method",
    "DreamSim↓": "dreamsim",
    "CLIP-I↑": "clip_i",
    "FID↓": "fid",
    "R@1↑": "recall_at_1",
    "s/story": "seconds_per_story",
    "peak GB": "peak_memory_gb",
    "source": "source",
}


def build_parser():
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--stories", required=True, help="prompt-set file, story file, or folder of them")
    parser.add_argument("--generated", required=True, help="folder with <story name>/frame_000.png ...")
    parser.add_argument("--clip", default=None, help="local CLIP folder (CLIP-I, Recall@1, FID fallback)")
    parser.add_argument("--dreamsim", default=None, help="local folder: dino_vitb16/ clip_vitb16/ open_clip_vitb16/")
    parser.add_argument("--inception", default=None, help="FID Inception-v3 weights file or folder (pytorch-fid's)")
    parser.add_argument("--real", default=None, help="folder of real images for FID (default: stories' frame images)")
    parser.add_argument("--method", default=None, help="name of our row (default: the --generated folder name)")
    parser.add_argument("--no-boxes", action="store_true", help="score full frames instead of subject box crops")
    return parser


def table_row(summary: dict) -> dict:
    return {column: summary.get(key) for column, key in _KEYS.items()}


def run(args) -> dict:
    device = prepare(args)
    for option in ("clip", "dreamsim", "inception", "real"):
        value = getattr(args, option)
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(f"--{option}: {value!r} does not exist")
    entries = load_stories(args.stories)
    if args.quick:
        entries = entries[:2]
    models = MetricModels.load(clip=args.clip, dreamsim=args.dreamsim, inception=args.inception, device=device)
    method = args.method or Path(args.generated).name or "ours"
    result = evaluate_set(entries, args.generated, models, real=args.real, method=method,
                          use_boxes=not args.no_boxes)
    if models.clip is None and models.dreamsim is None:
        result["notes"].append("no --clip / --dreamsim given: only frames, seconds and memory were checked")
    rows = [table_row(r) for r in paper_rows()] + [table_row(result["summary"])]
    return {
        "title": TITLE,
        "columns": COLUMNS,
        "rows": rows,
        "summary": result["summary"],
        "stories": result["stories"],
        "fid": result["fid"],
        "models": result["models"],
        "notes": result["notes"] + [
            f"paper rows: {PAPER_SOURCE}",
            "paper memory (not per-story in its table): "
            + ", ".join(f"{gb} GB for {frames} frames" for frames, gb in PAPER_MEMORY_GB),
        ],
    }


def main(argv=None) -> dict:
    parser = build_parser()
    return run_and_report(run, parser, argv, errors=(FileNotFoundError, EvalInputError, LayoutError, ValueError))


if __name__ == "__main__":
    main(sys.argv[1:])
