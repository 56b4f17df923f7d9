"""Video lists and fetchers: parsing, the local-folder fetcher, and the yt-dlp fetcher against a fake ``yt_dlp``
module (nothing here touches the network)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types

import pytest

from training.data.build import build_dataset, main
from training.data.config import BuildConfig
from training.data.fetch import (
    LocalFolderFetcher,
    YtDlpFetcher,
    entry_key,
    local_copy,
    make_video_id,
    parse_rate,
    read_video_list,
)
from training.data.process import VideoTask, load_models
from training.data.video import VideoError

IDS = ("aaaaaaaaaa1", "bbbbbbbbbb2", "cccccccccc3")


def test_video_list_parsing(tmp_path):
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# the paper's release\n{IDS[0]}\n\n  https://www.youtube.com/watch?v={IDS[1]}&t=3  \n"
                       f"https://youtu.be/{IDS[0]}\n{IDS[2]}  # a comment\nhttps://example.org/v/clip.mp4\n")
    tasks = read_video_list(str(listing))
    assert [t.rel_path for t in tasks] == [IDS[0], f"https://www.youtube.com/watch?v={IDS[1]}&t=3", IDS[2],
                                           "https://example.org/v/clip.mp4"]  # the youtu.be line repeats IDS[0]
    assert [t.video_id for t in tasks[:3]] == [make_video_id(i) for i in IDS]
    assert all(t.path is None and t.source == t.rel_path for t in tasks)
    assert entry_key(f"https://www.youtube.com/shorts/{IDS[1]}") == IDS[1]
    listing.write_text("two words\n")
    with pytest.raises(ValueError, match="line 1: expected one id or URL, got 'two words'"):
        read_video_list(str(listing))
    with pytest.raises(FileNotFoundError, match="video_list"):
        read_video_list(str(tmp_path / "missing.txt"))
    assert parse_rate("2M") == 2 * 1024 * 1024 and parse_rate("1.5K") == 1536 and parse_rate(None) is None
    with pytest.raises(ValueError, match="rate_limit"):
        parse_rate("fast")


@pytest.fixture(scope="module")
def id_folder(tmp_path_factory, video_maker):
    root = tmp_path_factory.mktemp("by_id")
    video_maker(root / f"{IDS[0]}.mp4", 40, fps=2, size=(64, 48))
    video_maker(root / f"{IDS[1]}.mkv", 32, fps=2, size=(64, 48), colour=(20, 200, 40))
    return root


def test_local_folder_fetcher(id_folder):
    fetcher = LocalFolderFetcher(str(id_folder))
    assert fetcher.fetch(f"https://youtu.be/{IDS[1]}", "x") == os.path.join(id_folder, f"{IDS[1]}.mkv")
    with pytest.raises(VideoError, match="fetch_failed"):
        fetcher.fetch(IDS[2], "x")
    with pytest.raises(FileNotFoundError, match="fetch_root"):
        LocalFolderFetcher(str(id_folder / "nope"))


def _list_config(tmp_path, tiny_models, listing, **kw):
    detector, clip = tiny_models
    return BuildConfig(videos=None, video_list=str(listing), out=str(tmp_path / "out"), detector=detector, clip=clip,
                       min_size=40, box_threshold=0.0, text_threshold=0.0, progress=False, **kw)


def test_build_from_a_video_list(id_folder, tiny_models, tmp_path):
    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(IDS) + "\n")
    config = _list_config(tmp_path, tiny_models, listing, fetch_root=str(id_folder))
    stats = build_dataset(config, models=load_models(config))["stats"]
    assert stats["videos"] == {"seen": 3, "ok": 2, "failed": 1, "failed_by_reason": {"fetch_failed": 1}}
    assert stats["stories"] >= 2 and sorted(os.listdir(id_folder)) == sorted([f"{IDS[0]}.mp4", f"{IDS[1]}.mkv"])
    with open(os.path.join(config.out, "manifest.json")) as handle:
        records = json.load(handle)["videos"]
    assert records[make_video_id(IDS[2])]["status"] == "fetch_failed"
    assert set(os.listdir(os.path.join(config.out, "images"))) == {make_video_id(IDS[0]), make_video_id(IDS[1])}
    with pytest.raises(ValueError, match="fetch_root: the local fetcher needs --fetch-root"):
        config.replace(fetch_root=None)
    with pytest.raises(ValueError, match="videos/video_list: give exactly one"):
        config.replace(videos=str(id_folder))


class _FakeYoutubeDL:
    """The slice of ``yt_dlp.YoutubeDL`` the fetcher uses; "downloads" by copying a local file."""

    calls: list = []
    failures: list = []  # messages raised by the next calls, in order
    source_file = ""

    def __init__(self, params):
        self.params = params

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def extract_info(self, url, download):
        type(self).calls.append((url, dict(self.params)))
        if type(self).failures:
            raise _DownloadError(type(self).failures.pop(0))
        path = self.params["outtmpl"].replace("%(ext)s", "mp4")
        shutil.copyfile(type(self).source_file, path)
        return {"ext": "mp4", "requested_downloads": [{"filepath": path}]}

    def prepare_filename(self, info):
        raise AssertionError("requested_downloads is used")


class _DownloadError(Exception):
    pass


@pytest.fixture
def fake_yt_dlp(monkeypatch, id_folder):
    module = types.ModuleType("yt_dlp")
    module.YoutubeDL = _FakeYoutubeDL
    module.utils = types.SimpleNamespace(DownloadError=_DownloadError)
    monkeypatch.setitem(sys.modules, "yt_dlp", module)
    monkeypatch.setattr(_FakeYoutubeDL, "calls", [])
    monkeypatch.setattr(_FakeYoutubeDL, "failures", [])
    monkeypatch.setattr(_FakeYoutubeDL, "source_file", str(id_folder / f"{IDS[0]}.mp4"))
    monkeypatch.setattr("training.data.fetch.time.sleep", lambda s: None)
    return _FakeYoutubeDL


def test_yt_dlp_fetcher_options_retries_and_cleanup(fake_yt_dlp, tmp_path):
    fetcher = YtDlpFetcher(str(tmp_path / "dl"), rate_limit="2M", retries=2, sleep_interval=0.5)
    fake_yt_dlp.failures = ["HTTP Error 429: Too Many Requests"]
    path = fetcher.fetch(IDS[0], "vid-1")
    assert path == str(tmp_path / "dl" / "vid-1.mp4") and os.path.isfile(path)
    (url, params), (url2, _) = fake_yt_dlp.calls
    assert url == url2 == f"https://www.youtube.com/watch?v={IDS[0]}"
    assert params["ratelimit"] == 2 * 1024 * 1024 and params["retries"] == 2 and params["noplaylist"]
    assert params["format"].startswith("bv*[height>=720]")
    fake_yt_dlp.failures = ["ERROR: [youtube] xyz: Video unavailable"]
    with pytest.raises(VideoError, match="fetch_failed.*unavailable"):
        fetcher.fetch(IDS[1], "vid-2")
    assert len(fake_yt_dlp.calls) == 3  # a permanent error is not retried
    fake_yt_dlp.failures = ["HTTP Error 503"] * 3
    with pytest.raises(VideoError, match="503"):
        fetcher.fetch(IDS[1], "vid-2")
    assert len(fake_yt_dlp.calls) == 6  # the first try and 2 retries
    # Downloads are deleted once used, unless kept.
    config = BuildConfig(videos=None, video_list="x", fetcher="yt-dlp", out=str(tmp_path), detector="d", clip="c")
    task = VideoTask("vid-3", None, IDS[2], source=IDS[2])
    with local_copy(task, config, fetcher) as got:
        assert os.path.isfile(got)
    assert not os.path.exists(got)
    with local_copy(task, config.replace(keep_downloads=True), fetcher) as got:
        pass
    assert os.path.isfile(got)


def test_cli_with_a_video_list_and_yt_dlp(fake_yt_dlp, tiny_models, tmp_path, capsys):
    detector, clip = tiny_models
    listing = tmp_path / "ids.txt"
    listing.write_text(f"{IDS[0]}\n{IDS[1]}\n")
    fake_yt_dlp.failures = ["ERROR: Private video"]
    args = ["--video-list", str(listing), "--fetcher", "yt-dlp", "--download-dir", str(tmp_path / "dl"),
            "--out", str(tmp_path / "out"), "--detector", detector, "--clip", clip, "--min-size", "40",
            "--box-threshold", "0", "--text-threshold", "0", "--no-progress", "--log-level", "WARNING"]
    assert main(args) == 0
    assert "1 ok, 1 failed {'fetch_failed': 1}" in capsys.readouterr().out
    assert os.listdir(tmp_path / "dl") == []  # the download was deleted after decoding
    with pytest.raises(SystemExit):
        main([*args, "--rate-limit", "lots"])
    assert "rate_limit: expected bytes per second" in capsys.readouterr().err
    assert main([*args, "--detector", str(tmp_path / "none"), "--out", str(tmp_path / "out2")]) == 2
    assert "error: detector: model folder" in capsys.readouterr().err
    missing = [a if a != str(listing) else str(tmp_path / "none.txt") for a in args]
    assert main([*missing, "--out", str(tmp_path / "out3")]) == 2
    assert "video_list: " in capsys.readouterr().err
