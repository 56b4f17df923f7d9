"""Write a ShapeStory data set in the trainer's JSONL format (train and test splits).

    .venv/bin/python -m training.shapestory.make_dataset --out data/shapestory --train 20000 --test 500

Writes ``<out>/train/train-*.jsonl`` and ``<out>/test/test-*.jsonl`` (one story per line, image paths relative to
the shard) with their PNG frames and references; separate folders, so pointing the trainer at ``<out>/train`` never
reads held-out stories. Re-running resumes (finished shards are kept). The test split holds characters (shape x
colour x pattern combinations) never seen in training.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from lay2story_core.shapestory import ShapeStoryConfig, write_dataset

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=20000, help="number of training stories")
    parser.add_argument("--test", type=int, default=500, help="number of held-out stories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (multiple of 8)")
    parser.add_argument("--min-box", type=float, default=0.25)
    parser.add_argument("--max-box", type=float, default=0.65)
    parser.add_argument("--second-character", type=float, default=0.25, help="share of two-character stories")
    parser.add_argument("--shard-size", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = ShapeStoryConfig(size=args.size, min_box=args.min_box, max_box=args.max_box,
                              second_character_prob=args.second_character)
    shards = {}
    for split, count in (("train", args.train), ("test", args.test)):
        start = time.monotonic()
        shards[split] = write_dataset(os.path.join(args.out, split), count, split=split, seed=args.seed, config=config,
                                      shard_size=args.shard_size)
        logger.info("%s: %d stories in %d shards (%.1f s)", split, count, len(shards[split]), time.monotonic() - start)
    return shards


if __name__ == "__main__":
    main()
