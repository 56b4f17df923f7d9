"""The Ray Data engine against the one-process build: same stories, boxes, groups, captions and images; a killed
Ray worker costs only its video's retry; a restarted job skips finished videos.

One local Ray (2 logical CPUs, small fractional workers) serves the whole module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter

import pytest
import torch

ray = pytest.importorskip("ray")  # the ``data`` extra; CI installs it

from training.data.build import build_dataset  # noqa: E402
from training.data.config import BuildConfig  # noqa: E402
from training.data.fetch import make_video_id  # noqa: E402
from training.data.process import load_models  # noqa: E402
from training.data.ray_engine import start_ray  # noqa: E402

# Actor start-up (each imports torch and transformers) dominates; on a loaded 2-core machine a run took up to 200 s.
pytestmark = pytest.mark.timeout(1200)
HOOKS_DIR = os.path.dirname(os.path.abspath(__file__))
# name -> (seconds, size); 2 fps videos, 0.25 fps sampling -> ceil(seconds / 4) samples.
VIDEOS = {"a.mp4": (64, (64, 48)), "sub/b.mkv": (40, (48, 64)), "c.mp4": (36, (64, 48)), "short.mp4": (8, (64, 48))}


@pytest.fixture(scope="module")
def ray_session():
    sys.path.insert(0, HOOKS_DIR)  # so the workers can import l2s_ray_hooks (the engine passes sys.path on)
    # Ray renices its workers by +15 on top of ours; on a shared machine the test's own niceness is enough.
    niceness = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    try:
        start_ray(num_cpus=2)
    finally:
        if niceness is None:
            os.environ.pop("RAY_worker_niceness")
        else:
            os.environ["RAY_worker_niceness"] = niceness
    yield
    ray.shutdown()
    sys.path.remove(HOOKS_DIR)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, video_maker):
    root = tmp_path_factory.mktemp("ray_videos")
    for k, (name, (seconds, size)) in enumerate(VIDEOS.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        video_maker(root / name, seconds, fps=2, size=size, colour=(60 * k, 200 - 50 * k, 90), seed=k)
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.avi").write_bytes(b"\x00garbage" * 200)
    return root


@pytest.fixture(scope="module")
def config(videos, tiny_models, tmp_path_factory):
    detector, clip = tiny_models
    # Chunks of 4 frames and windows of 6 detected frames: several model calls and k-means windows per video.
    return BuildConfig(videos=str(videos), out=str(tmp_path_factory.mktemp("unused")), detector=detector, clip=clip,
                       min_size=40, box_threshold=0.0, text_threshold=0.0, batch_size=4, window=6, clusters=5,
                       shard_size=4, progress=False, threads=1, workers=2, cpus_per_worker=0.25)


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """The one-process build, at the Ray workers' torch thread count (float reductions depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = config.replace(out=str(tmp_path_factory.mktemp("one") / "out"), workers=1)
        summary = build_dataset(work, models=load_models(work))
    finally:
        torch.set_num_threads(threads)
    return work, summary


def _lines(out):
    lines = []
    for name in sorted(os.listdir(os.path.join(out, "shards"))):
        if name.endswith(".jsonl"):
            with open(os.path.join(out, "shards", name), encoding="utf-8") as handle:
                lines += [line.rstrip("\n") for line in handle]
    return lines


def _images(out):
    found = {}
    for folder, _, names in os.walk(os.path.join(out, "images")):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                found[os.path.relpath(os.path.join(folder, name), out)] = handle.read()
    return found


def _records(out):
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        videos = json.load(handle)["videos"]
    return {k: {f: v for f, v in r.items() if f != "shard"} for k, r in videos.items()}


def test_ray_with_two_workers_gives_the_one_process_result(ray_session, config, reference, tmp_path):
    ref, ref_summary = reference
    work = config.replace(out=str(tmp_path / "ray"), engine="ray")
    summary = build_dataset(work)
    assert summary["processed"] == 6
    assert ref_summary["stats"]["stories"] > 4  # several shards, several videos with stories
    # Shards hold the videos in the order they finished: compare the stories as a set, everything else exactly.
    assert sorted(_lines(work.out)) == sorted(_lines(ref.out))
    assert _images(work.out) == _images(ref.out)
    assert _records(work.out) == _records(ref.out)
    assert summary["stats"] == ref_summary["stats"]
    assert summary["stats"]["videos"]["failed_by_reason"] == {"empty_file": 1, "too_few_frames": 1, "unreadable": 1}


def _kill_when_paused(flag, killed, stop):
    """Watcher: SIGKILL the worker process whose id appears in ``flag``."""
    while not stop.is_set():
        try:
            with open(flag, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            text = ""
        if text:
            os.kill(int(text), signal.SIGKILL)
            killed.append(int(text))
            return
        time.sleep(0.05)


def test_a_resumed_ray_job_with_a_killed_worker_redoes_only_that_video(ray_session, config, reference, tmp_path):
    from l2s_ray_hooks import chunk_digest  # noqa: F401  (the hook module imports in the driver too)

    ref, _ = reference
    flag, log = tmp_path / "paused.pid", tmp_path / "calls.log"
    work = config.replace(out=str(tmp_path / "killed"), engine="ray",
                          filters=(f"l2s_ray_hooks.pause_once:flag={flag},log={log}",))
    # A restarted job: the one-process build with three videos forgotten (the hook keeps every frame, so the
    # settings differ only in the hook's name: allowed here by editing the recorded settings).
    shutil.copytree(ref.out, work.out)
    manifest_path = os.path.join(work.out, "manifest.json")
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    for name in ("a.mp4", "sub/b.mkv", "c.mp4"):
        del manifest["videos"][make_video_id(name)]
    manifest["settings"]["filters"] = list(work.filters)
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_when_paused, args=(str(flag), killed, stop), daemon=True)
    watcher.start()
    try:
        summary = build_dataset(work)
    finally:
        stop.set()
        watcher.join(5)
    assert killed, "the worker was never paused"
    assert summary["processed"] == 3 and summary["skipped"] == 3 and summary["stats"]["videos"]["ok"] == 3
    assert sorted(_lines(work.out)) == sorted(_lines(ref.out))
    assert _images(work.out) == _images(ref.out)
    calls = [line.split() for line in log.read_text().splitlines()]
    # The killed process saw one chunk (the first of its video); after the restart that video is screened again
    # from its first chunk, and every other chunk of every video exactly once.
    [first] = [digest for pid, digest in calls if int(pid) == killed[0]]
    counts = Counter(digest for _, digest in calls)
    assert counts[first] == 2 and all(n == 1 for d, n in counts.items() if d != first)
    assert len(counts) == sum(-(-n // config.batch_size) for n in (16, 10, 9))  # chunks of a, b and c


def test_a_changed_setting_refuses_to_mix_with_ray_shards(ray_session, config, reference, tmp_path):
    ref, _ = reference
    out = str(tmp_path / "copy")
    shutil.copytree(ref.out, out)
    # Resuming a finished one-process build with Ray: nothing to do, nothing started, files unchanged.
    summary = build_dataset(config.replace(out=out, engine="ray"))
    assert summary["processed"] == 0 and sorted(_lines(out)) == sorted(_lines(ref.out))
    with pytest.raises(ValueError, match=r"window: 6 -> 7"):
        build_dataset(config.replace(out=out, engine="ray", window=7))


def test_a_fatal_caption_error_in_a_worker_stops_the_build(config):
    """A rejected API key in a caption worker: its row carries the error and the driver raises it (checked on the
    stage functions directly: no Ray needed)."""
    import pickle

    from training.data.captions import CaptionError
    from training.data.process import VideoResult, VideoTask
    from training.data.ray_engine import VideoState, iter_results, write

    class Rejecting:
        def caption(self, frames, boxes):
            raise CaptionError("401: the API key was rejected", fatal=True)

    state = VideoState(VideoTask("v", "/v.mp4", "v.mp4"), VideoResult("v", "v.mp4"), plans=[([0], None)])
    with state.stage() as ok:
        assert ok
        Rejecting().caption([], [])
    assert state.fatal == "401: the API key was rejected" and not state.ok
    with state.stage() as ok:  # later stages skip it
        assert not ok
    good = VideoState(VideoTask("w", "/w.mp4", "w.mp4"), VideoResult("w", "w.mp4", status="too_small"))
    rows = [write({"payload": pickle.dumps(s)}, config) for s in (good, state)]

    class Rows:
        def iter_rows(self):
            return iter(rows)

    results = iter_results(Rows())
    assert next(results).status == "too_small"
    with pytest.raises(CaptionError, match="API key was rejected") as info:
        next(results)
    assert info.value.fatal


def test_cli_options_of_the_ray_engine(tiny_models, videos):
    from training.data.build import parse_args
    from training.data.ray_engine import _gpus

    detector, clip = tiny_models
    base = ["--videos", str(videos), "--out", "/tmp/unused", "--detector", detector, "--clip", clip]
    config = parse_args([*base, "--engine", "ray", "--ray-address", "auto", "--workers", "8", "--device", "cuda",
                         "--decode-workers", "64", "--batch-size", "16"])
    assert (config.engine, config.ray_address, config.workers, config.decode_workers) == ("ray", "auto", 8, 64)
    assert _gpus(config) == 0.5  # one CLIP and one Grounding DINO actor per GPU
    assert _gpus(config.replace(captioner="transformers", caption_model="m")) == pytest.approx(1 / 3)
    assert _gpus(config.replace(detect_workers=24)) == pytest.approx(8 / 32)  # 1 CLIP + 3 DINO actors per GPU
    assert _gpus(config.replace(captioner="http", caption_url="http://x")) == 0.5  # an HTTP captioner needs no GPU
    assert _gpus(config.replace(device=None)) == 0.0 and _gpus(config.replace(gpus_per_worker=1.0)) == 1.0
    # Engine settings do not change the output, so a job may resume with another engine or cluster.
    assert config.output_settings() == parse_args(base).output_settings()
    with pytest.raises(ValueError, match="engine: expected one of"):
        config.replace(engine="spark")
    with pytest.raises(ValueError, match="cpus_per_worker: expected a positive number, got 0"):
        config.replace(cpus_per_worker=0)


def test_missing_model_folders_fail_before_ray_starts(config, tmp_path):
    with pytest.raises(FileNotFoundError, match="detector: model folder"):
        build_dataset(config.replace(detector=str(tmp_path / "nope"), engine="ray", out=str(tmp_path / "a")))
    with pytest.raises(FileNotFoundError, match="aesthetic_head: .* does not exist"):
        build_dataset(config.replace(aesthetic_head=str(tmp_path / "h.st"), engine="ray", out=str(tmp_path / "b")))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")  # nothing written
