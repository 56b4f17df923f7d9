"""Output files of a dataset build: JSONL shards (+ optional webdataset-style tars), ``manifest.json`` and
``stats.json``. Every file is written to a temporary name and ``os.replace``-d into place.

Layout under ``--out``::

    manifest.json                 settings, seed, per-video records, shard list (what a resumed run reads)
    stats.json                    counts aggregated over the manifest's videos
    shards/shard-00000.jsonl      one Story dict per line; image paths relative to shards/
    shards/shard-00000.tar        (--tar) per story: <key>.json + <key>.frame<i>.<ext> + <key>.ref.<ext>
    images/<video-id>/<k>.<ext>   frames (k = sampling index at --fps)

A video's stories always sit together in one shard; the manifest's shard entry lists ``[video_id, count]`` in line
order, which is how a re-processed video's old lines are found and removed (:func:`drop_videos`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import tarfile
from collections.abc import Iterable, Sequence

from lay2story_core.fileio import write_bytes_atomic, write_text_atomic

from .process import STAGES

__all__ = ["FORMAT", "FORMAT_VERSION", "aggregate_stats", "drop_videos", "load_manifest", "new_manifest",
           "next_shard_index", "remove_orphan_shards", "save_manifest", "shard_name", "write_shard", "write_stats"]

logger = logging.getLogger(__name__)

FORMAT = "lay2story-dataset"
# 2: CLIP embeddings per --batch-size chunk before detection (shared by the local and Ray engines), so a version-1
# build is not resumed with this code.
FORMAT_VERSION = 2
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.(jsonl|tar)$")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


# ------------------------------------------------------------------------------------------------------ manifest
def new_manifest(settings: dict, seed: int) -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "seed": seed, "settings": settings, "videos": {},
            "shards": []}


def load_manifest(out: str) -> dict | None:
    """The manifest of ``out``, or ``None`` if there is none yet. A manifest of another format raises."""
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            manifest = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); move it away to start over") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r} is not "
                         f"{FORMAT!r}; is --out another tool's folder?")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: version {manifest.get('version')!r}, this code writes {FORMAT_VERSION}")
    for key, kind in (("videos", dict), ("shards", list), ("settings", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{path}: {key!r} should be a {kind.__name__}, got {manifest.get(key)!r:.80}")
    return manifest


def save_manifest(out: str, manifest: dict) -> None:
    write_text_atomic(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=1, sort_keys=True) + "\n")


# -------------------------------------------------------------------------------------------------------- shards
def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible archives
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(out: str, entries: Sequence[tuple[str, str]]) -> bytes:
    """A webdataset-style tar: one sample per story, key ``<video_id>-<n>``; the JSON's image paths are the member
    names of the sample's images."""
    shards_dir = os.path.join(out, "shards")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        counters: dict[str, int] = {}
        for video_id, line in entries:
            n = counters.get(video_id, 0)
            counters[video_id] = n + 1
            key = f"{video_id}-{n:04d}"
            story = json.loads(line)
            members: list[tuple[str, str]] = []

            def member(rel: str, tag: str, key: str = key, members: list = members) -> str:
                name = f"{key}.{tag}{posixpath.splitext(rel)[1]}"
                members.append((name, os.path.normpath(os.path.join(shards_dir, rel))))
                return name

            for i, frame in enumerate(story["frames"]):
                if frame.get("image"):
                    frame["image"] = member(frame["image"], f"frame{i}")
            for character in story["characters"]:
                ref = character.get("reference") or {}
                if ref.get("image"):
                    ref["image"] = member(ref["image"], f"ref-{character['id']}")
            _tar_member(tar, f"{key}.json", json.dumps(story, ensure_ascii=False, separators=(",", ":")).encode())
            for name, path in members:
                with open(path, "rb") as handle:
                    _tar_member(tar, name, handle.read())
    return buffer.getvalue()


def write_shard(out: str, index: int, entries: Sequence[tuple[str, str]], tar: bool) -> dict:
    """Writes ``entries`` (``(video_id, story JSON line)``, a video's lines contiguous) as shard ``index``; returns
    its manifest entry."""
    name = shard_name(index)
    shards_dir = os.path.join(out, "shards")
    os.makedirs(shards_dir, exist_ok=True)
    write_bytes_atomic(os.path.join(shards_dir, f"{name}.jsonl"),
                        "".join(line + "\n" for _, line in entries).encode("utf-8"))
    if tar:
        write_bytes_atomic(os.path.join(shards_dir, f"{name}.tar"), _tar_bytes(out, entries))
    videos: list[list] = []
    for video_id, _ in entries:
        if videos and videos[-1][0] == video_id:
            videos[-1][1] += 1
        else:
            videos.append([video_id, 1])
    return {"name": name, "jsonl": f"shards/{name}.jsonl", "tar": f"shards/{name}.tar" if tar else None,
            "stories": len(entries), "videos": videos}


def _read_entries(out: str, entry: dict) -> list[tuple[str, str]]:
    with open(os.path.join(out, entry["jsonl"]), encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    owners = [video_id for video_id, count in entry["videos"] for _ in range(count)]
    if len(owners) != len(lines):
        raise ValueError(f"{entry['jsonl']}: {len(lines)} lines but the manifest lists {len(owners)} stories")
    return list(zip(owners, lines))


def drop_videos(out: str, manifest: dict, video_ids: Iterable[str]) -> int:
    """Removes the stories of ``video_ids`` from the shards that hold them (rewriting those shards, deleting emptied
    ones) and from the manifest; returns how many stories were removed. Used before re-processing videos."""
    drop = set(video_ids)
    removed = 0
    kept_shards = []
    for entry in manifest["shards"]:
        if not any(video_id in drop for video_id, _ in entry["videos"]):
            kept_shards.append(entry)
            continue
        entries = _read_entries(out, entry)
        remaining = [(v, line) for v, line in entries if v not in drop]
        removed += len(entries) - len(remaining)
        index = int(_SHARD_RE.match(os.path.basename(entry["jsonl"])).group(1))
        if remaining:
            kept_shards.append(write_shard(out, index, remaining, tar=bool(entry.get("tar"))))
        else:
            for key in ("jsonl", "tar"):
                if entry.get(key) and os.path.exists(os.path.join(out, entry[key])):
                    os.unlink(os.path.join(out, entry[key]))
    manifest["shards"] = kept_shards
    for video_id in drop:
        manifest["videos"].pop(video_id, None)
    return removed


def remove_orphan_shards(out: str, manifest: dict) -> list[str]:
    """Deletes shard files the manifest does not list (written by a run killed before it updated the manifest)."""
    listed = {os.path.basename(e[k]) for e in manifest["shards"] for k in ("jsonl", "tar") if e.get(k)}
    shards_dir = os.path.join(out, "shards")
    removed = []
    if os.path.isdir(shards_dir):
        for name in sorted(os.listdir(shards_dir)):
            stale_tmp = name.startswith(".shard-") and name.endswith(".tmp")
            if (_SHARD_RE.match(name) and name not in listed) or stale_tmp:
                os.unlink(os.path.join(shards_dir, name))
                removed.append(name)
    return removed


def next_shard_index(manifest: dict) -> int:
    indices = [int(_SHARD_RE.match(os.path.basename(e["jsonl"])).group(1)) for e in manifest["shards"]]
    return max(indices, default=-1) + 1


# --------------------------------------------------------------------------------------------------------- stats
def aggregate_stats(manifest: dict) -> dict:
    """Counts over every video recorded in the manifest (so they are the same however many runs it took)."""
    records = manifest["videos"].values()
    failed: dict[str, int] = {}
    frames = dict.fromkeys(STAGES, 0)
    by_length: dict[str, int] = {}
    filtered_by: dict[str, int] = {}
    corrupt = caption_failed = without_reference = stories = 0
    for record in records:
        if record["status"] != "ok":
            failed[record["status"]] = failed.get(record["status"], 0) + 1
        for stage in STAGES:
            frames[stage] += int(record["frames"].get(stage, 0))
        for length, count in record["sequences"].items():
            by_length[length] = by_length.get(length, 0) + count
        for name, count in record.get("filtered_by", {}).items():
            filtered_by[name] = filtered_by.get(name, 0) + count
        corrupt += record.get("corrupt", 0)
        caption_failed += record.get("caption_failed", 0)
        without_reference += record.get("without_reference", 0)
        stories += record.get("num_stories", 0)
    seen = len(manifest["videos"])
    return {
        "videos": {"seen": seen, "ok": seen - sum(failed.values()), "failed": sum(failed.values()),
                   "failed_by_reason": dict(sorted(failed.items()))},
        "frames": frames,
        "frames_dropped_by_filter": dict(sorted(filtered_by.items())),
        "corrupt_packets": corrupt,
        "sequences": {"total": sum(by_length.values()),
                      "by_length": dict(sorted(by_length.items(), key=lambda kv: int(kv[0]))),
                      "caption_failed": caption_failed, "without_reference": without_reference},
        "stories": stories,
        "shards": len(manifest["shards"]),
    }


def write_stats(out: str, manifest: dict) -> dict:
    stats = aggregate_stats(manifest)
    write_text_atomic(os.path.join(out, "stats.json"), json.dumps(stats, indent=1) + "\n")
    return stats
