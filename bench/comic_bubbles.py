"""Comic bubbles placed by the layout: how often a bubble covers a character, on ShapeStory stories.

    python -m bench.comic_bubbles [--quick] [--json PATH] [--stories N] [--layout four_panel] [--panel-width 256]

Builds ShapeStory stories (half of them with a second character), gives every frame 1-2 dialogue lines (speakers
drawn from the frame's characters; one line in ten is narration in a caption box; styles speech, thought, shout;
texts from 1 to 16 words), composes the pages from the ground-truth frames with the boxes of the generated layout,
and counts, per bubble: overlapping any character box (the bar: <= 0.05), overlapping another bubble (must be 0),
text that did not fit (cut with an ellipsis), text shrunk below the starting size, and lines out of reading order.
No model, no GPU: the figures depend only on the placer.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from bench.common import bench_parser, run_and_report
from lay2story_core.comic import ComicStyle, check_layout, story_dialogue, typeset
from lay2story_core.shapestory import ShapeStoryConfig, generate_story, render_story
from lay2story_core.story.schema import DialogueLine

COLUMNS = ["frames", "characters", "lines", "bubbles", "overlap_character", "overlap_bubble", "not_fitted",
           "shrunk", "out_of_order", "mean_font_px", "seconds"]
BAR = 0.05
PHRASES = (
    "Hi!", "Look!", "What?", "Run!", "Hmm...", "Over here!", "Wait for me!", "Did you hear that?",
    "Where are we going?", "I think it is going to rain.", "Look at the moon tonight!",
    "We should go home before it gets dark.", "Nobody told me the grass would be this wet.",
    "If we hurry, we can still catch the last bus into town.",
    "I have been walking around this garden all day and I still cannot find the gate.",
)
STYLES = ("speech", "speech", "speech", "thought", "shout")


def dialogue_story(seed: int, second_character_prob: float = 0.5):
    """A ShapeStory story (version 2) with 1-2 lines per frame, a pure function of ``seed``."""
    story = generate_story(seed, ShapeStoryConfig(second_character_prob=second_character_prob))
    rng = np.random.default_rng(seed)
    frames = []
    for frame in story.frames:
        speakers = [s.character for s in frame.subjects]
        lines = []
        for k in range(int(rng.integers(1, 3))):
            text = PHRASES[int(rng.integers(len(PHRASES)))]
            if rng.random() < 0.1:
                lines.append(DialogueLine(text, None, "caption"))
            else:
                speaker = speakers[k % len(speakers)] if len(speakers) > 1 else speakers[0]
                lines.append(DialogueLine(text, speaker, STYLES[int(rng.integers(len(STYLES)))]))
        frames.append(dataclasses.replace(frame, dialogue=tuple(lines)))
    return dataclasses.replace(story, frames=tuple(frames))


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 0 and min(a[3], b[3]) - max(a[1], b[1]) > 0


def _out_of_order(bubbles, rtl: bool) -> int:
    count = 0
    for k, b in enumerate(bubbles):
        for p in bubbles[:k]:
            tol = 0.5 * min(b.box[3] - b.box[1], p.box[3] - p.box[1])
            cx, pcx = (b.box[0] + b.box[2]) / 2, (p.box[0] + p.box[2]) / 2
            backwards = cx > pcx if rtl else cx < pcx
            count += b.box[1] < p.box[1] - tol or (abs(b.box[1] - p.box[1]) <= tol and backwards)
    return count


def measure(stories: int, layout: str = "four_panel", panel_width: int = 256, font_size: int = 18,
            seed: int = 0) -> list[dict]:
    """Rows of :data:`COLUMNS`: per characters-in-frame x lines-per-frame group, then ``all``."""
    check_layout(layout)
    style = ComicStyle(panel_width=panel_width, font_size=font_size)
    groups: dict[tuple, dict] = {}
    seconds = 0.0
    for index in range(stories):
        story = dialogue_story(seed + index)
        images, _ = render_story(story)
        start = time.perf_counter()
        result = typeset(images, None, layout, style, dialogue=story_dialogue(story))
        seconds += time.perf_counter() - start
        for panel in result.panels:
            frame = story.frames[panel.frame]
            key = (len(frame.subjects), len(frame.dialogue))
            for group in (key, ("all", "all")):
                g = groups.setdefault(group, {"frames": 0, "bubbles": 0, "overlap_character": 0,
                                              "overlap_bubble": 0, "not_fitted": 0, "shrunk": 0,
                                              "out_of_order": 0, "font": 0})
                g["frames"] += 1
                g["bubbles"] += len(panel.bubbles)
                g["overlap_character"] += sum(any(_overlap(b.box, c) for c in panel.characters)
                                              for b in panel.bubbles)
                g["overlap_bubble"] += sum(_overlap(a.box, b.box) for k, a in enumerate(panel.bubbles)
                                           for b in panel.bubbles[k + 1:])
                g["not_fitted"] += sum(not b.fits for b in panel.bubbles)
                g["shrunk"] += sum(b.font_size < style.start_font_size for b in panel.bubbles)
                g["out_of_order"] += _out_of_order(panel.bubbles, result.reading == "rtl")
                g["font"] += sum(b.font_size for b in panel.bubbles)
    rows = []
    for (characters, lines), g in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        n = max(1, g["bubbles"])
        rows.append({"frames": g["frames"], "characters": characters, "lines": lines, "bubbles": g["bubbles"],
                     "overlap_character": g["overlap_character"] / n, "overlap_bubble": g["overlap_bubble"],
                     "not_fitted": g["not_fitted"] / n, "shrunk": g["shrunk"] / n,
                     "out_of_order": g["out_of_order"], "mean_font_px": g["font"] / n,
                     "seconds": seconds if characters == "all" else None})
    return rows


def run(args) -> dict:
    stories = args.stories or (8 if args.quick else 64)
    rows = measure(stories, args.layout, args.panel_width, args.font_size, args.seed)
    overall = rows[-1]
    return {"title": f"Comic bubbles on ShapeStory ({stories} stories, layout {args.layout}, panels "
                     f"{args.panel_width} px, font {args.font_size} px)",
            "columns": COLUMNS, "rows": rows,
            "bar": {"overlap_character": BAR, "overlap_bubble": 0,
                    "passed": overall["overlap_character"] <= BAR and overall["overlap_bubble"] == 0},
            "notes": ["overlap_character / not_fitted / shrunk: shares of bubbles (the body's bounding box, tails "
                      "excluded, against the generated layout's boxes); overlap_bubble, out_of_order: counts",
                      f"bar: overlap_character <= {BAR} and overlap_bubble == 0 over all bubbles"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=None, help="stories (default 64; quick 8)")
    parser.add_argument("--layout", default="four_panel", help="page template (default four_panel)")
    parser.add_argument("--panel-width", type=int, default=256, help="panel width in pixels (default 256)")
    parser.add_argument("--font-size", type=int, default=18, help="starting font size in pixels (default 18)")
    parser.add_argument("--seed", type=int, default=0, help="first story seed (default 0)")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
