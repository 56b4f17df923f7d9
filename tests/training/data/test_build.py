"""End to end: synthetic videos -> shards, with the real (tiny, random) Grounding DINO and CLIP classes.

Random detectors give random boxes; ``box_threshold=0`` makes every frame "detected", so the frame counts per stage
are known exactly.
"""

from __future__ import annotations

import functools
import json
import os
import tarfile
import time

import pytest
import torch

from lay2story_core.story import Story
from training.data import build as build_module
from training.data.build import build_dataset, discover_videos, main, make_video_id
from training.data.captions import CaptionError, TemplateCaptioner
from training.data.config import BuildConfig
from training.data.process import Models, load_models

# name -> (seconds, fps, size); 0.25 fps samples ceil(seconds / 4) frames.
VIDEOS = {
    "a.mp4": (120, 2, (64, 48)),     # 30 samples
    "sub/b.mkv": (60, 2, (64, 48)),  # 15
    "c.mp4": (40, 2, (48, 64)),      # 10
    "short.mp4": (6, 2, (64, 48)),   # 2 -> too few frames for a sequence
    "tiny.mp4": (8, 2, (32, 24)),    # 2, below --min-size 40
}
GOOD = ("a.mp4", "sub/b.mkv", "c.mp4")


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory, video_maker):
    root = tmp_path_factory.mktemp("videos")
    for k, (name, (seconds, fps, size)) in enumerate(VIDEOS.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        video_maker(root / name, seconds, fps=fps, size=size, colour=(50 * k, 200 - 40 * k, 90), seed=k)
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.avi").write_bytes(b"\x00garbage" * 200)
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def base_config(video_dir, tiny_models, tmp_path_factory):
    detector, clip = tiny_models
    return BuildConfig(videos=str(video_dir), out=str(tmp_path_factory.mktemp("unused")), detector=detector,
                       clip=clip, min_size=40, box_threshold=0.0, text_threshold=0.0, shard_size=3, tar=True,
                       progress=False)


@pytest.fixture(scope="module")
def models(base_config):
    return load_models(base_config)


@pytest.fixture(scope="module")
def built(base_config, models, tmp_path_factory):
    config = base_config.replace(out=str(tmp_path_factory.mktemp("built") / "out"))
    return config, build_dataset(config, models=models)


def _lines(out):
    lines = []
    shards = os.path.join(out, "shards")
    for name in sorted(os.listdir(shards)):
        if name.endswith(".jsonl"):
            with open(os.path.join(shards, name), encoding="utf-8") as handle:
                lines += [line.rstrip("\n") for line in handle]
    return lines


def _files(out):
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, out)] = handle.read()
    return found


def test_stats_count_every_stage_and_every_bad_video(built):
    config, summary = built
    stats = summary["stats"]
    assert summary["processed"] == 7 and summary["skipped"] == 0
    assert stats["videos"] == {"seen": 7, "ok": 3, "failed": 4, "failed_by_reason": {
        "empty_file": 1, "too_few_frames": 1, "too_small": 1, "unreadable": 1}}
    frames = stats["frames"]
    assert frames["sampled"] == 30 + 15 + 10 + 2 + 2
    assert frames["size_filtered"] == frames["filtered"] == frames["detected"] == 30 + 15 + 10 + 2
    # k-means keeps one frame per centre: 12 per 150-frame window; a window of <= 12 frames keeps all of them.
    assert frames["deduplicated"] == 12 + 12 + 10 + 2
    by_length = stats["sequences"]["by_length"]
    assert set(by_length) <= {"4", "5", "6"}
    assert frames["grouped"] == sum(int(k) * v for k, v in by_length.items())
    assert stats["stories"] == stats["sequences"]["total"] == sum(by_length.values()) == len(_lines(config.out))
    with open(os.path.join(config.out, "stats.json")) as handle:
        assert json.load(handle) == stats


def test_every_line_is_a_story_with_existing_images(built):
    config, _ = built
    shards = os.path.join(config.out, "shards")
    lines = _lines(config.out)
    assert lines
    for line in lines:
        story = Story.from_dict(json.loads(line))
        assert 4 <= story.num_frames <= 6 and story.width % 8 == 0
        [character] = story.characters
        images = [f.image for f in story.frames]
        assert all(p.startswith("../images/") for p in images)
        assert character.reference is not None and character.reference.image not in images
        resolved = story.resolve_paths(shards)
        for path in [f.image for f in resolved.frames] + [resolved.characters[0].reference.image]:
            assert os.path.isfile(path), path
        for frame in story.frames:
            [subject] = frame.subjects
            assert subject.character == character.id and subject.box is not None and subject.caption
        # Frames are in time order (file names are the sampling index).
        indices = [int(os.path.splitext(os.path.basename(p))[0]) for p in images]
        assert indices == sorted(indices) and len(set(indices)) == len(indices)


def test_manifest_and_shards(built):
    config, summary = built
    with open(os.path.join(config.out, "manifest.json")) as handle:
        manifest = json.load(handle)
    assert manifest["seed"] == 0 and manifest["settings"]["fps"] == 0.25
    assert set(manifest["videos"]) == {make_video_id(p) for p in [*VIDEOS, "empty.mp4", "junk.avi"]}
    records = {r["rel_path"]: r for r in manifest["videos"].values()}
    assert records["junk.avi"]["status"] == "unreadable" and records["junk.avi"]["shard"] is None
    for name in GOOD:
        assert records[name]["status"] == "ok" and records[name]["num_stories"] >= 1
    # Each video's stories sit together in one shard; shards hold >= shard_size stories except the last.
    listed = [e["stories"] for e in manifest["shards"]]
    assert sum(listed) == summary["stats"]["stories"] and all(n >= 3 for n in listed[:-1])
    for entry in manifest["shards"]:
        for video_id, count in entry["videos"]:
            assert manifest["videos"][video_id]["shard"] == entry["name"]
            assert manifest["videos"][video_id]["num_stories"] == count
    # The tar of each shard: one sample per story, the JSON pointing at its own members.
    for entry in manifest["shards"]:
        with tarfile.open(os.path.join(config.out, entry["tar"])) as tar:
            names = tar.getnames()
            samples = [n for n in names if n.endswith(".json")]
            assert len(samples) == entry["stories"]
            for sample in samples:
                story = Story.from_dict(json.loads(tar.extractfile(sample).read()))
                key = sample[: -len(".json")]
                paths = [f.image for f in story.frames] + [story.characters[0].reference.image]
                assert all(p in names and p.startswith(key + ".") for p in paths)
                assert all(tar.getmember(p).mtime == 0 for p in paths)


def test_same_inputs_and_seed_give_the_same_files(built, base_config, models, tmp_path):
    config, _ = built
    again = base_config.replace(out=str(tmp_path / "again"))
    build_dataset(again, models=models)
    assert _files(again.out) == _files(config.out)
    other = base_config.replace(out=str(tmp_path / "other_seed"), seed=5)
    build_dataset(other, models=models)
    assert _lines(other.out) != _lines(config.out)


def test_resume_skips_done_videos_and_redoes_a_deleted_record(built, base_config, models, tmp_path):
    import shutil

    config, _ = built
    out = str(tmp_path / "resume")
    shutil.copytree(config.out, out)
    work = base_config.replace(out=out)
    before = _files(out)
    summary = build_dataset(work, models=models)
    assert summary["processed"] == 0 and summary["skipped"] == 7
    assert _files(out) == before
    # Forget one video: only it is processed again, and its old stories are not duplicated.
    manifest_path = os.path.join(out, "manifest.json")
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    del manifest["videos"][make_video_id("sub/b.mkv")]
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    seen = []
    real = build_module.process_video

    def spy(task, cfg, mdl, *rest):
        seen.append(task.rel_path)
        return real(task, cfg, mdl, *rest)

    build_module.process_video = spy
    try:
        summary = build_dataset(work, models=models)
    finally:
        build_module.process_video = real
    assert seen == ["sub/b.mkv"] and summary["processed"] == 1
    assert sorted(_lines(out)) == sorted(_lines(config.out))
    assert summary["stats"] == json.load(open(os.path.join(config.out, "stats.json")))


def test_interrupted_run_keeps_finished_work_and_resumes(built, base_config, models, tmp_path, monkeypatch):
    config, _ = built
    work = base_config.replace(out=str(tmp_path / "killed"))
    real = build_module.process_video
    calls = []

    def dies_on_third(task, cfg, mdl, *rest):
        calls.append(task.rel_path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, cfg, mdl, *rest)

    monkeypatch.setattr(build_module, "process_video", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(work, models=models)
    with open(os.path.join(work.out, "manifest.json")) as handle:
        assert len(json.load(handle)["videos"]) == 2  # the two finished videos are recorded
    for line in _lines(work.out):
        Story.from_dict(json.loads(line))
    # Leftovers of a crash in the middle of a write are cleaned up on resume.
    open(os.path.join(work.out, "shards", "shard-00042.jsonl"), "w").write('{"half": ')
    open(os.path.join(work.out, "shards", ".shard-00001.jsonl.x.tmp"), "w").write("{")
    os.makedirs(os.path.join(work.out, "images", ".a-1234.tmp-99"))
    monkeypatch.setattr(build_module, "process_video", real)
    summary = build_dataset(work, models=models)
    assert summary["processed"] == 5 and summary["skipped"] == 2
    assert sorted(os.listdir(os.path.join(work.out, "shards"))) == sorted(os.listdir(os.path.join(config.out,
                                                                                                  "shards")))
    assert not [n for n in os.listdir(os.path.join(work.out, "images")) if n.startswith(".")]
    assert sorted(_lines(work.out)) == sorted(_lines(config.out))


def test_a_failed_shard_write_leaves_no_partial_file(base_config, models, tmp_path, monkeypatch):
    import training.data.shards as shards

    work = base_config.replace(out=str(tmp_path / "crash"), tar=False)
    real_replace = os.replace

    def fail_on_shards(src, dst):
        if os.path.basename(dst).startswith("shard-"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(shards.os, "replace", fail_on_shards)
    with pytest.raises(OSError, match="No space"):
        build_dataset(work, models=models)
    assert os.listdir(os.path.join(work.out, "shards")) == []


def test_small_windows_dedup_each_window(base_config, models, tmp_path):
    config = base_config.replace(out=str(tmp_path / "windows"), window=5, clusters=2)
    stats = build_dataset(config, models=models)["stats"]
    # a: 30 frames = 6 windows, b: 15 = 3, c: 10 = 2, short: 2 = 1; two frames kept per window.
    assert stats["frames"]["deduplicated"] == 2 * (6 + 3 + 2 + 1)
    assert stats["frames"]["detected"] == 30 + 15 + 10 + 2


def test_settings_must_match_on_resume(built, base_config, models):
    config, _ = built
    with pytest.raises(ValueError, match=r"fps: 0.25 -> 0.5"):
        build_dataset(config.replace(fps=0.5), models=models)


class _NoBoxes:
    def detect(self, images, *args, **kwargs):
        return [None] * len(images)


class _Flaky:
    """Fails every other sequence (not fatal), or everything fatally."""

    def __init__(self, fatal=False):
        self.calls = 0
        self.fatal = fatal
        self.template = TemplateCaptioner()

    def caption(self, frames, boxes):
        self.calls += 1
        if self.fatal or self.calls % 2 == 0:
            raise CaptionError("model said no", fatal=self.fatal)
        return self.template.caption(frames, boxes)


def test_no_detection_and_caption_failures_are_counted(base_config, models, tmp_path):
    no_boxes = Models(_NoBoxes(), models.clip, models.captioner)
    stats = build_dataset(base_config.replace(out=str(tmp_path / "nobox")), models=no_boxes)["stats"]
    assert stats["videos"]["failed_by_reason"]["no_detection"] == 4 and stats["stories"] == 0  # short.mp4 too
    flaky = _Flaky()
    stats = build_dataset(base_config.replace(out=str(tmp_path / "flaky")),
                          models=Models(models.detector, models.clip, flaky))["stats"]
    assert stats["sequences"]["caption_failed"] == flaky.calls // 2 > 0
    assert stats["stories"] == flaky.calls - flaky.calls // 2
    fatal = Models(models.detector, models.clip, _Flaky(fatal=True))
    with pytest.raises(CaptionError, match="model said no"):
        build_dataset(base_config.replace(out=str(tmp_path / "fatal")), models=fatal)


def test_workers_give_the_same_output(base_config, models, tmp_path):
    # Each worker runs torch with cpu_count // workers threads. Float reductions (and so near-tied detections of the
    # tiny random detector) depend on the thread count, so the one-process reference uses the workers' count.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        reference = base_config.replace(out=str(tmp_path / "one"))
        build_dataset(reference, models=models)
    finally:
        torch.set_num_threads(threads)
    # fork: the workers inherit the imported modules (spawn, the CLI default, re-imports torch in each worker).
    work = base_config.replace(out=str(tmp_path / "workers"), workers=2, start_method="fork")
    summary = build_dataset(work)
    assert summary["processed"] == 7
    assert _files(work.out) == _files(reference.out)


def _hang_on(video_id, task, config):
    if task.video_id == video_id:
        time.sleep(300)
    return task.video_id


def test_a_stopped_build_kills_its_workers(base_config, tmp_path, monkeypatch):
    # A build that stops (an error on the main side, Ctrl-C, a timeout) must not wait for the videos in flight, nor
    # for ever for a worker hung in a decoder (session 20's CI: a fork worker hung in swscale's thread-pool teardown).
    tasks = build_module.list_tasks(base_config)
    monkeypatch.setattr(build_module, "_worker_run", functools.partial(_hang_on, tasks[1].video_id))
    work = base_config.replace(out=str(tmp_path / "stopped"), workers=2, start_method="fork")
    results = build_module._results(tasks, work, None)
    assert next(results) == tasks[0].video_id
    start = time.monotonic()
    results.close()
    assert time.monotonic() - start < 30  # without the kill: 300 s, the hung video's sleep


def test_cli(built, base_config, tmp_path, capsys):
    config, _ = built
    out = tmp_path / "cli"
    args = ["--videos", base_config.videos, "--out", str(out), "--detector", base_config.detector, "--clip",
            base_config.clip, "--min-size", "40", "--box-threshold", "0", "--text-threshold", "0",
            "--shard-size", "3", "--tar", "--no-progress", "--log-level", "WARNING"]
    assert main(args) == 0
    assert "processed 7 videos" in capsys.readouterr().out
    assert _files(str(out)) == _files(config.out)
    with pytest.raises(SystemExit):
        main([*args, "--fps", "0"])
    assert "fps: expected a positive number, got 0.0" in capsys.readouterr().err


def test_discovery_and_ids(video_dir, tmp_path):
    tasks = discover_videos(str(video_dir))
    assert [t.rel_path for t in tasks] == sorted(["a.mp4", "c.mp4", "empty.mp4", "junk.avi", "short.mp4",
                                                  "sub/b.mkv", "tiny.mp4"])
    assert make_video_id("x/clip 1.mp4") != make_video_id("y/clip 1.mp4")
    assert make_video_id("x/clip 1.mp4").startswith("clip_1-")
    with pytest.raises(FileNotFoundError, match="videos"):
        discover_videos(str(tmp_path / "none"))


def test_config_errors(base_config):
    with pytest.raises(ValueError, match="box_threshold: expected a number in \\[0, 1\\], got 2"):
        base_config.replace(box_threshold=2)
    with pytest.raises(ValueError, match="captioner"):
        base_config.replace(captioner="gpt")
    with pytest.raises(ValueError, match="caption_url"):
        base_config.replace(captioner="http")
    with pytest.raises(ValueError, match="probs: must sum to 1"):
        base_config.replace(length_probs=(0.5, 0.5, 0.5))


def test_aesthetic_and_safety_settings_filter_and_count(base_config, models, tiny_models, tmp_path):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPImageProcessorPil

    _, clip_folder = tiny_models
    # A head that scores the first embedding coordinate, and a threshold between two frames' scores near the median.
    from training.data.video import sample_frames

    scores = []
    for name in ("a.mp4", "sub/b.mkv", "c.mp4", "short.mp4"):
        frames, _ = sample_frames(os.path.join(base_config.videos, name), 0.25)
        scores += models.clip.embed_images([f.image for f in frames]).numpy()[:, 0].tolist()
    ordered = sorted(scores)
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    weight = torch.zeros(1, 16)
    weight[0, 0] = 1.0
    save_file({"layers.0.weight": weight, "layers.0.bias": torch.zeros(1)}, str(tmp_path / "head.safetensors"))
    config = base_config.replace(out=str(tmp_path / "aesthetic"), aesthetic_head=str(tmp_path / "head.safetensors"),
                                 min_aesthetic=threshold, tar=False)
    stats = build_dataset(config)["stats"]
    dropped = stats["frames_dropped_by_filter"]["aesthetic"]
    assert dropped == sum(s < threshold for s in scores) == len(scores) // 2
    assert stats["frames"]["filtered"] == stats["frames"]["detected"] == stats["frames"]["size_filtered"] - dropped
    with pytest.raises(ValueError, match=r"min_aesthetic: .* -> 0.5"):
        build_dataset(config.replace(min_aesthetic=0.5))
    with pytest.raises(ValueError, match=r"aesthetic_head: .* -> None"):
        build_dataset(config.replace(aesthetic_head=None))
    # A safety margin of +10 flags every frame: each video fails as "filtered", the frames are counted.
    torch.manual_seed(0)
    StableDiffusionSafetyChecker(CLIPConfig.from_pretrained(clip_folder)).save_pretrained(tmp_path / "safety")
    CLIPImageProcessorPil.from_pretrained(clip_folder).save_pretrained(tmp_path / "safety")
    config = base_config.replace(out=str(tmp_path / "safety_out"), safety_checker=str(tmp_path / "safety"),
                                 safety_adjustment=10.0, tar=False)
    stats = build_dataset(config)["stats"]
    assert stats["frames_dropped_by_filter"] == {"safety": stats["frames"]["size_filtered"]} and stats["stories"] == 0
    assert stats["videos"]["failed_by_reason"]["filtered"] == 4
    with open(os.path.join(config.out, "manifest.json")) as handle:
        settings = json.load(handle)["settings"]
    assert settings["safety_adjustment"] == 10.0 and settings["min_aesthetic"] == 5.0


def test_a_build_of_an_older_format_is_not_resumed(base_config, models, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": "lay2story-dataset", "version": 1, "seed": 0,
                                                   "settings": {}, "videos": {}, "shards": []}))
    with pytest.raises(ValueError, match="version 1, this code writes 2"):
        build_dataset(base_config.replace(out=str(out)), models=models)
