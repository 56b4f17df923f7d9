"""The dataset build on Ray Data (``--engine ray``): the stages of :mod:`training.data.process` as one streaming
pipeline, one row per video.

    from_items(videos) -> map(decode)                              CPU tasks: fetch, sample, size filter
                       -> map_batches(ScreenStage)  actor pool     CLIP: filter hooks, embeddings, aesthetic head
                       -> map_batches(DetectStage)  actor pool     Grounding DINO: top box
                       -> map(select)                              CPU tasks: windowed k-means, 4/5/6 groups
                       -> map_batches(CaptionStage) actor pool     model captioners (the template one is a CPU task)
                       -> map(write)                               CPU tasks: frame images under out/images/
    driver: iter_rows() -> the same manifest / shard / stats code as the local engine (training.data.build)

Model actors take ``num_gpus`` (``--gpus-per-worker``; with a CUDA ``--device`` the default shares the GPUs between
the pools, ``--workers`` being the number of GPUs), ``num_cpus`` (``--cpus-per-worker``) and a pool size
(``--workers``; ``--detect-workers`` for Grounding DINO, the costliest stage, whose image processor also runs on the
actor's CPU, so several DINO actors per GPU keep it busy). (Without GPUs, decoding and CLIP ask for the same
resources and Ray Data may fuse them in one actor; with GPUs they stay apart, decoding on ``--decode-workers`` CPU
tasks.) Each batch is one video, whose frames the stage sends to its model in chunks of ``--batch-size`` (the same
chunks as the local engine, so both give the same boxes). Ray Data streams with backpressure, so memory holds the
videos in flight, not the dataset; a row holds one video's sampled frames until detection, its kept frames after
de-duplication (cap long videos with ``--max-frames-per-video``).

Fault tolerance (Ray Data's defaults): a killed actor is restarted and its video retried (max_restarts and
max_task_retries -1), a killed task is retried (max_retries -1 for system failures). Stage code never raises: a bad
video becomes its status, and a fatal caption error (a rejected API key) travels in the row to the driver, which
stops the build there. Finished videos are recorded by the driver as their shards are written, so a restarted job
skips them. Images are written by the workers: on a cluster ``--out`` must be a shared file system, and the nodes
need this project on the same path (it is put on ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .captions import CaptionError
from .config import BuildConfig
from .fetch import local_copy
from .process import (
    Candidate,
    VideoResult,
    VideoTask,
    WindowDedup,
    build_captioner,
    caption_sequences,
    check_screened,
    decode_chunks,
    detect_chunk,
    guard,
    load_models,
    plan_sequences,
    screen_chunk,
    video_seed,
    write_stories,
)

__all__ = ["CaptionStage", "DetectStage", "ScreenStage", "VideoState", "build_pipeline", "iter_results", "ray_results",
           "runtime_env", "start_ray"]

logger = logging.getLogger(__name__)


@dataclass
class VideoState:
    """One video between stages: its task and result so far, then its frames (chunks after decoding, candidates
    with embeddings and boxes after the model stages), its kept frames and sequence plans."""

    task: VideoTask
    result: VideoResult
    chunks: list[list] = field(default_factory=list)
    kept: list[Candidate] = field(default_factory=list)
    plans: list = field(default_factory=list)
    fatal: str = ""  # a fatal caption error, raised by the driver (worker exceptions lose their type on the way)

    @property
    def ok(self) -> bool:
        return self.result.status == "ok" and not self.fatal

    @contextlib.contextmanager
    def stage(self) -> Iterator[bool]:
        """Runs one stage's body if the video is still ok, with :func:`guard`'s error handling."""
        if not self.ok:
            yield False
            return
        try:
            with guard(self.result, self.task.rel_path):
                yield True
        except CaptionError as err:  # guard lets only fatal ones through
            self.fatal = str(err)


def _pack(state: VideoState) -> dict:
    return {"video_id": state.task.video_id, "payload": pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)}


def _unpack(payload) -> VideoState:
    return pickle.loads(bytes(payload))


# ------------------------------------------------------------------------------------------------------ CPU stages
def decode(row: dict, config: BuildConfig) -> dict:
    task = VideoTask(row["video_id"], row["path"], row["rel_path"], row["source"])
    state = VideoState(task, VideoResult(task.video_id, task.rel_path))
    with guard(state.result, task.rel_path), local_copy(task, config) as path:
        state.chunks = list(decode_chunks(path, config, state.result))
    return _pack(state)


def select(row: dict, config: BuildConfig) -> dict:
    state = _unpack(row["payload"])
    with state.stage() as ok:
        if ok:
            dedup = WindowDedup(config, video_seed(config.seed, state.task.video_id))
            for chunk in state.chunks:
                dedup.add(chunk)
            state.chunks = []
            state.kept = dedup.finish(state.result)
            state.plans = plan_sequences(state.task.video_id, state.kept, config, state.result)
    state.chunks = []
    return _pack(state)


def caption_with_template(row: dict, config: BuildConfig) -> dict:
    state = _unpack(row["payload"])
    with state.stage() as ok:
        if ok:
            state.plans = caption_sequences(state.kept, state.plans, build_captioner(config), state.result,
                                            state.task.rel_path)
    return _pack(state)


def write(row: dict, config: BuildConfig) -> dict:
    state = _unpack(row["payload"])
    with state.stage() as ok:
        if ok:
            write_stories(state.task.video_id, state.kept, state.plans, config, state.result)
    return {"video_id": state.task.video_id, "result": pickle.dumps(state.result), "fatal": state.fatal}


# ---------------------------------------------------------------------------------------------------- model actors
class _ModelStage:
    """An actor holding the models of one stage; each call gets a batch of videos (rows)."""

    parts: tuple[str, ...] = ()

    def __init__(self, config: BuildConfig) -> None:
        import torch

        torch.set_num_threads(config.threads or max(1, int(config.cpus_per_worker)))
        self.config = config
        self.models = load_models(config, self.parts)

    def run(self, state: VideoState) -> None:
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        payloads = []
        for payload in batch["payload"]:
            state = _unpack(payload)
            with state.stage() as ok:
                if ok:
                    self.run(state)
            payloads.append(_pack(state)["payload"])
        return {"video_id": list(batch["video_id"]), "payload": payloads}


class ScreenStage(_ModelStage):
    parts = ("screen",)

    def run(self, state: VideoState) -> None:
        state.chunks = [screen_chunk(chunk, self.config, self.models, state.result) for chunk in state.chunks]


class DetectStage(_ModelStage):
    parts = ("detect",)

    def run(self, state: VideoState) -> None:
        state.chunks = [detect_chunk(chunk, self.config, self.models, state.result) for chunk in state.chunks]
        check_screened(state.result, self.config)


class CaptionStage(_ModelStage):
    parts = ("caption",)

    def run(self, state: VideoState) -> None:
        state.plans = caption_sequences(state.kept, state.plans, self.models.captioner, state.result,
                                        state.task.rel_path)


# ------------------------------------------------------------------------------------------------------- pipeline
def runtime_env() -> dict:
    """Workers import this project from the driver's source paths (not its interpreter's own paths)."""
    prefixes = tuple({sys.prefix, sys.base_prefix})
    paths = [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)]
    paths = [p for p in dict.fromkeys(paths) if not p.startswith(prefixes)]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


def start_ray(address: str | None = None, num_cpus: float | None = None) -> None:
    """Joins ``address`` (``"auto"``: the running cluster) or starts a local Ray; nothing when Ray is running."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {} if address else {"num_cpus": num_cpus}
    ray.init(address=address, runtime_env=runtime_env(), include_dashboard=False, log_to_driver=True,
             configure_logging=False, **kwargs)


def _pool_sizes(config: BuildConfig, videos: int) -> dict[str, int]:
    """Actors per model pool (never more than there are videos)."""
    sizes = {"screen": config.workers, "detect": config.detect_workers or config.workers}
    if config.captioner != "template":
        sizes["caption"] = config.workers
    return {k: max(1, min(v, videos)) for k, v in sizes.items()}


def _gpus(config: BuildConfig) -> float:
    """GPUs per model actor: by default the model pools share the GPUs, ``--workers`` being the number of GPUs (one
    CLIP, one captioning-model and ``--detect-workers / --workers`` Grounding DINO actors per GPU)."""
    if config.gpus_per_worker is not None:
        return config.gpus_per_worker
    if not (config.device or "cpu").startswith("cuda"):
        return 0.0
    sizes = _pool_sizes(config, videos=2**31)
    if config.captioner == "http":  # a CPU actor
        sizes.pop("caption")
    return config.workers / sum(sizes.values())


def build_pipeline(tasks: Sequence[VideoTask], config: BuildConfig):
    """The Ray Dataset whose rows are ``{"video_id", "result"}`` (a pickled :class:`VideoResult`)."""
    import ray.data

    cpus, gpus, n = config.cpus_per_worker, _gpus(config), max(1, min(config.workers, len(tasks)))
    sizes = _pool_sizes(config, len(tasks))
    actors = {"batch_size": 1, "batch_format": "numpy", "num_cpus": cpus, "fn_constructor_kwargs": {"config": config}}
    tasks_args = {"num_cpus": cpus, "fn_kwargs": {"config": config}}
    rows = [dataclasses.asdict(t) for t in tasks]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    ds = ds.map(decode, concurrency=max(1, min(config.decode_workers or n, len(rows))), **tasks_args)
    ds = ds.map_batches(ScreenStage, num_gpus=gpus, concurrency=sizes["screen"], **actors)
    ds = ds.map_batches(DetectStage, num_gpus=gpus, concurrency=sizes["detect"], **actors)
    ds = ds.map(select, **tasks_args)
    if config.captioner == "template":
        ds = ds.map(caption_with_template, **tasks_args)
    else:
        ds = ds.map_batches(CaptionStage, num_gpus=gpus if config.captioner == "transformers" else 0.0,
                            concurrency=sizes["caption"], **actors)
    return ds.map(write, **tasks_args)


def ray_results(tasks: Sequence[VideoTask], config: BuildConfig) -> Iterator[VideoResult]:
    """Results of ``tasks`` from the Ray pipeline, in the order videos finish. A fatal caption error raises."""
    if not tasks:
        return
    import ray.data

    needed = config.cpus_per_worker * (sum(_pool_sizes(config, len(tasks)).values()) + config.workers
                                       + (config.decode_workers or config.workers))
    start_ray(config.ray_address, num_cpus=max(float(os.cpu_count() or 1), needed))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = config.progress
    context.enable_operator_progress_bars = config.progress
    with contextlib.suppress(AttributeError):
        context.print_on_execution_start = config.progress
    yield from iter_results(build_pipeline(tasks, config))


def iter_results(ds) -> Iterator[VideoResult]:
    """Streams the pipeline's results; a fatal caption error in a worker is raised here as a fatal
    :class:`CaptionError` (the videos already yielded are kept by the caller)."""
    for row in ds.iter_rows():
        if row["fatal"]:
            raise CaptionError(row["fatal"], fatal=True)
        yield pickle.loads(row["result"])
