"""Build a Lay2Story training set from a folder of videos or a list of video ids (the Lay2Story-1M recipe).

    python -m training.data.build --videos VIDEOS/ --out DATA/ --detector models/grounding-dino-tiny \\
        --clip models/clip-vit-large-patch14 [--captioner http --caption-url https://api.openai.com \\
        --caption-model gpt-4o-mini --api-key-env OPENAI_API_KEY] [--workers 4] [--tar]
    python -m training.data.build --video-list ids.txt --fetcher yt-dlp --engine ray --ray-address auto \\
        --device cuda --workers 8 --out DATA/ --detector ... --clip ...

Engines: ``local`` (this process, or --workers processes, one video per task) and ``ray`` (Ray Data: decoding on
CPU workers, CLIP / Grounding DINO / a local captioner as GPU actor pools, see ``training/data/ray_engine.py``).
Both run the same stage functions (``training/data/process.py``) and write the same shards.

Recipe (paper, Sec. 3): frames at 0.25 fps -> frames whose shorter side is >= --min-size -> (optional filter hooks)
-> Grounding DINO top box of --prompt, kept if it passes --box-threshold -> CLIP image embeddings + k-means per
--window frames with --clusters centres, the frame nearest each centre kept -> groups of 4/5/6 frames (50/30/20%)
-> captions per sequence -> one Story per sequence (reference: another kept frame of the video with its box).

Resumable: videos recorded in ``manifest.json`` are skipped; delete a record (or pass --retry-failed) to redo it.
The same inputs, settings and --seed give the same files.
"""

from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from tqdm.auto import tqdm

from .config import BuildConfig
from .fetch import build_fetcher, discover_videos, make_video_id, read_video_list
from .process import STAGES, Models, VideoResult, VideoTask, check_model_paths, load_models, process_video
from .shards import (
    drop_videos,
    load_manifest,
    new_manifest,
    next_shard_index,
    remove_orphan_shards,
    save_manifest,
    write_shard,
    write_stats,
)

__all__ = ["build_dataset", "discover_videos", "list_tasks", "main", "make_video_id", "parse_args"]

logger = logging.getLogger(__name__)

# Settings that may differ on resume without changing what a video produces (model folders may move). For the
# optional models, whether one is set is still checked.
_UNCHECKED = ("detector", "clip", "caption_model", "caption_url", "aesthetic_head", "safety_checker")
# Videos without stories are recorded in the manifest at least this often (stories are recorded per shard).
_CHECKPOINT_EVERY = 50


def list_tasks(config: BuildConfig) -> list[VideoTask]:
    """The videos of the build: the files under ``--videos``, or the entries of ``--video-list``."""
    return discover_videos(config.videos) if config.videos is not None else read_video_list(config.video_list)


# ------------------------------------------------------------------------------------------------ worker side
@functools.lru_cache(maxsize=1)
def _worker_models(config: BuildConfig) -> Models:
    """Models of this worker process, loaded on its first video (a per-process cache; the main process never uses
    it)."""
    import torch

    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // config.workers))
    return load_models(config)


def _worker_run(task: VideoTask, config: BuildConfig) -> VideoResult:
    return process_video(task, config, _worker_models(config))


def _results(tasks: list[VideoTask], config: BuildConfig, models: Models | None) -> Iterator[VideoResult]:
    """Results in task order (so shards do not depend on which worker finishes first); with the Ray engine, in the
    order videos finish."""
    if config.engine == "ray":
        from .ray_engine import ray_results

        yield from ray_results(tasks, config)
        return
    if config.workers == 1 or len(tasks) <= 1:
        models = models or load_models(config)
        fetcher = build_fetcher(config) if config.video_list is not None else None
        for task in tasks:
            yield process_video(task, config, models, fetcher)
        return
    context = multiprocessing.get_context(config.start_method)
    pool = ProcessPoolExecutor(max_workers=config.workers, mp_context=context)
    try:
        yield from pool.map(_worker_run, tasks, [config] * len(tasks))
    except BaseException:  # the build stops (an error, Ctrl-C, the consumer closed us): so do the videos in flight
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kills the pool's worker processes. ``shutdown`` alone waits for the videos being processed, and for ever for a
    worker hung in a decoder; whatever they had done is redone on resume (records are written by the main side)."""
    if hasattr(pool, "kill_workers"):  # Python >= 3.14
        pool.kill_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


# ------------------------------------------------------------------------------------------------ main side
def _check_settings(manifest: dict, config: BuildConfig) -> None:
    old, new = manifest["settings"], config.output_settings()
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
             if (old.get(k) != new.get(k) if k not in _UNCHECKED else bool(old.get(k)) != bool(new.get(k)))]
    if diffs:
        raise ValueError(f"out: {config.out!r} was built with other settings ({'; '.join(diffs)}); use a new --out "
                         "or the same settings")


class _Bars:
    """One tqdm bar per stage: videos, and frames after each stage, and sequences."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.videos = tqdm(total=total, desc="videos", unit="video", disable=not enabled, position=0)
        self.stages = {s: tqdm(desc=f"frames {s}", unit="frame", disable=not enabled, position=i + 1)
                       for i, s in enumerate(STAGES)}
        self.sequences = tqdm(desc="sequences", unit="seq", disable=not enabled, position=len(STAGES) + 1)

    def update(self, result: VideoResult) -> None:
        self.videos.update(1)
        for stage, bar in self.stages.items():
            bar.update(result.frames.get(stage, 0))
        self.sequences.update(len(result.stories))

    def close(self) -> None:
        for bar in (self.videos, *self.stages.values(), self.sequences):
            bar.close()


def build_dataset(config: BuildConfig, models: Models | None = None) -> dict:
    """Runs (or resumes) a build; returns ``{"processed", "skipped", "stats"}``. ``models`` (already loaded) is
    used instead of loading them when ``workers == 1``."""
    out = config.out
    if models is None:
        check_model_paths(config)
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    manifest = load_manifest(out)
    if manifest is None:
        manifest = new_manifest(config.output_settings(), config.seed)
    else:
        _check_settings(manifest, config)
        manifest["settings"] = config.output_settings()
    for name in os.listdir(os.path.join(out, "images")):  # leftovers of a killed run
        if name.startswith(".") and ".tmp-" in name:
            shutil.rmtree(os.path.join(out, "images", name), ignore_errors=True)

    tasks = list_tasks(config)
    done = manifest["videos"]
    todo = [t for t in tasks if t.video_id not in done or (config.retry_failed and done[t.video_id]["status"] != "ok")]
    stale = drop_videos(out, manifest, [t.video_id for t in todo])
    if stale:
        logger.info("removed %d stories of %d videos that will be processed again", stale, len(todo))
    orphans = remove_orphan_shards(out, manifest)
    if orphans:
        logger.info("removed shard files of an interrupted run: %s", ", ".join(orphans))
    save_manifest(out, manifest)
    logger.info("%d videos found, %d already done, %d to process", len(tasks), len(tasks) - len(todo), len(todo))

    buffer: list[tuple[str, str]] = []
    pending: list[VideoResult] = []
    index = next_shard_index(manifest)

    def commit(seal: bool) -> None:
        nonlocal index, buffer, pending
        shard = None
        if seal and buffer:
            entry = write_shard(out, index, buffer, tar=config.tar)
            manifest["shards"].append(entry)
            shard, index, buffer = entry["name"], index + 1, []
        keep = []
        for result in pending:
            if result.stories and shard is None:
                keep.append(result)  # its stories are still in the buffer
                continue
            record = result.record()
            record["shard"] = shard if result.stories else None
            done[result.video_id] = record
        pending = keep
        save_manifest(out, manifest)
        write_stats(out, manifest)

    bars = _Bars(len(todo), config.progress)
    try:
        since_checkpoint = 0
        for result in _results(todo, config, models):
            bars.update(result)
            pending.append(result)
            buffer.extend((result.video_id, line) for line in result.stories)
            since_checkpoint += 1
            if len(buffer) >= config.shard_size:
                commit(seal=True)
                since_checkpoint = 0
            elif since_checkpoint >= _CHECKPOINT_EVERY:
                commit(seal=False)
                since_checkpoint = 0
    except BaseException:
        commit(seal=True)  # keep what finished (Ctrl-C, a fatal captioner error), then stop
        raise
    else:
        commit(seal=True)
    finally:
        bars.close()
    stats = write_stats(out, manifest)
    return {"processed": len(todo), "skipped": len(tasks) - len(todo), "stats": stats}


# ---------------------------------------------------------------------------------------------------------- CLI
def _probs(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _lengths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def parse_args(argv: list[str] | None = None) -> BuildConfig:
    p = argparse.ArgumentParser(prog="python -m training.data.build", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", help="folder of videos (searched recursively)")
    source.add_argument("--video-list", help="file of video ids or URLs, one a line (the paper's release format)")
    p.add_argument("--out", required=True, help="output folder (created; re-running resumes)")
    p.add_argument("--detector", required=True, help="local Grounding DINO folder (transformers format)")
    p.add_argument("--clip", required=True, help="local CLIP folder (transformers CLIPModel) for de-duplication")
    p.add_argument("--fps", type=float, default=0.25, help="frames sampled per second")
    p.add_argument("--min-size", type=int, default=720, help="drop frames whose shorter side is smaller (pixels)")
    p.add_argument("--prompt", default="the main character", help="what Grounding DINO looks for")
    p.add_argument("--box-threshold", type=float, default=0.35, help="keep frames whose top box scores at least this")
    p.add_argument("--text-threshold", type=float, default=0.25, help="token threshold for the box label")
    p.add_argument("--window", type=int, default=150, help="frames per k-means window")
    p.add_argument("--clusters", type=int, default=12, help="k-means centres per window (one frame kept per centre)")
    p.add_argument("--lengths", type=_lengths, default=(4, 5, 6), help="sequence lengths")
    p.add_argument("--length-probs", type=_probs, default=(0.5, 0.3, 0.2), help="probability of each length")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means and grouping")
    p.add_argument("--captioner", choices=("template", "http", "transformers"), default="template",
                   help="template: deterministic, no model; http: OpenAI-compatible server; transformers: local VLM")
    p.add_argument("--identity", default="the main character", help="identity text of the template captioner")
    p.add_argument("--caption-url", help="http captioner: server URL, e.g. https://api.openai.com")
    p.add_argument("--caption-model", help="http: model name (default gpt-4o-mini); transformers: model folder")
    p.add_argument("--api-key-env", help="http: name of the environment variable holding the API key")
    p.add_argument("--caption-retries", type=int, default=4, help="http: retries after the first try")
    p.add_argument("--caption-timeout", type=float, default=60.0, help="http: seconds per request")
    p.add_argument("--filter", dest="filters", action="append", default=[],
                   help="filter hook NAME[:key=value,...] (aesthetic, safety, or a dotted factory path); repeatable")
    p.add_argument("--aesthetic-head", help="LAION aesthetic head file (.safetensors/.pth) scored on the pipeline's "
                   "CLIP embeddings")
    p.add_argument("--min-aesthetic", type=float, default=5.0, help="drop frames whose aesthetic score is lower")
    p.add_argument("--safety-checker", help="local StableDiffusionSafetyChecker folder; flagged frames are dropped")
    p.add_argument("--safety-adjustment", type=float, default=0.0, help="added to the checker's scores (>0: stricter)")
    p.add_argument("--image-format", choices=("jpg", "png"), default="jpg", help="format of the written frames")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of the written frames")
    p.add_argument("--max-frames-per-video", type=int, default=None, help="stop sampling a video after this many")
    p.add_argument("--shard-size", type=int, default=1000, help="stories per shard (a video is never split)")
    p.add_argument("--tar", action="store_true", help="also write webdataset-style tar shards")
    p.add_argument("--workers", type=int, default=1,
                   help="local: processes, one video per task; ray: actors per model stage and decoding tasks")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local processes or Ray Data")
    p.add_argument("--ray-address", help="ray: cluster to join ('auto' = the running one); none starts a local Ray")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs each task / actor reserves")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="ray: GPUs each model actor reserves (default: with a CUDA --device, one GPU shared by "
                   "one actor of each model stage; else 0)")
    p.add_argument("--decode-workers", type=int, default=None,
                   help="ray: decoding tasks at once (default --workers; decoding every frame of a 720p video at "
                   "0.25 fps sampling takes ~10 CPU cores per GPU)")
    p.add_argument("--detect-workers", type=int, default=None,
                   help="ray: Grounding DINO actors (default --workers; ~5x CLIP's FLOPs, so more per GPU pays)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default cpus / workers)")
    p.add_argument("--fetcher", default="local", help="video-list: yt-dlp, local, or a dotted factory path")
    p.add_argument("--fetch-root", help="local fetcher: folder holding <id>.<ext> files")
    p.add_argument("--download-dir", help="yt-dlp: where downloads go (default: a folder in the temp dir)")
    p.add_argument("--keep-downloads", action="store_true", help="keep downloaded videos after decoding")
    p.add_argument("--fetch-retries", type=int, default=3, help="yt-dlp: retries after the first try")
    p.add_argument("--rate-limit", help="yt-dlp: bytes per second per download, e.g. 2M")
    p.add_argument("--sleep-interval", type=float, default=0.0, help="yt-dlp: seconds between a worker's downloads")
    p.add_argument("--start-method", choices=("spawn", "forkserver", "fork"), default="spawn",
                   help="how worker processes start (fork is faster but unsafe once torch has started threads)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per detector / CLIP batch")
    p.add_argument("--device", help="torch device of the models (default cpu)")
    p.add_argument("--retry-failed", action="store_true", help="process again the videos recorded as failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-level", default="INFO", help="logging level")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    kwargs = {k: v for k, v in vars(args).items() if k not in ("no_progress", "log_level")}
    try:
        return BuildConfig(**kwargs, progress=not args.no_progress)
    except ValueError as err:
        p.error(str(err))
        raise  # unreachable: p.error exits


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        summary = build_dataset(config)
    except (FileNotFoundError, ValueError) as err:  # a bad path, list or resumed --out: one line, exit status 2
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 2
    stats = summary["stats"]
    print(f"processed {summary['processed']} videos, skipped {summary['skipped']} already done; "  # noqa: T201
          f"{stats['videos']['ok']} ok, {stats['videos']['failed']} failed {stats['videos']['failed_by_reason']}; "
          f"{stats['stories']} stories in {stats['shards']} shards under {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
