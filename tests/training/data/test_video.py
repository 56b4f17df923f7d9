"""PyAV frame sampling: counts and times at a given fps, and bad files."""

from __future__ import annotations

import math

import pytest

from training.data.video import VideoError, sample_frames


@pytest.mark.parametrize("seconds, expected", [(4.0, 1), (4.5, 2), (8.0, 2), (10.0, 3), (12.5, 4), (0.25, 1)])
def test_frame_count_at_quarter_fps(tmp_path, video_maker, seconds, expected):
    path = video_maker(tmp_path / "v.mp4", seconds, fps=8)
    frames, info = sample_frames(path, fps=0.25)
    # One frame per 4 s, the first at t = 0: ceil(duration * fps).
    assert len(frames) == expected == math.ceil(seconds * 0.25)
    assert [f.time for f in frames] == pytest.approx([4.0 * k for k in range(expected)])
    assert [f.index for f in frames] == list(range(expected))
    assert info.decoded == round(seconds * 8) and info.corrupt == 0
    assert (info.width, info.height) == (64, 48)
    assert all(f.image.size == (64, 48) and f.image.mode == "RGB" for f in frames)


def test_other_rates_and_frame_content(tmp_path, video_maker):
    path = video_maker(tmp_path / "v.mkv", 3.0, fps=10, colour=(0, 0, 255))
    frames, _ = sample_frames(path, fps=2)
    assert len(frames) == 6
    assert [f.time for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    # A rate above the video's own keeps every frame, once.
    assert len(sample_frames(path, fps=50)[0]) == 30
    # The moving blue square is there: the bluest pixel moves to the right over time.
    import numpy as np

    def blue_x(image):
        a = np.asarray(image).astype(int)
        return int(np.argmax((a[..., 2] - a[..., 0]).max(0)))

    xs = [blue_x(f.image) for f in frames]
    assert xs == sorted(xs) and xs[-1] > xs[0]


def test_max_frames(tmp_path, video_maker):
    path = video_maker(tmp_path / "v.mp4", 20.0, fps=4)
    assert len(sample_frames(path, fps=0.25, max_frames=2)[0]) == 2


def test_bad_files(tmp_path, video_maker):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video" * 50)
    for path in (empty, junk, tmp_path / "missing.mp4"):
        with pytest.raises(VideoError) as err:
            sample_frames(path)
        assert err.value.reason == "unreadable" and str(path) in str(err.value)


def test_audio_only_file(tmp_path, video_maker):
    import wave

    audio = tmp_path / "audio.wav"
    with wave.open(str(audio), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(b"\x00\x00" * 8000)
    with pytest.raises(VideoError) as err:
        sample_frames(audio)
    assert err.value.reason == "no_video_stream"


def test_truncated_stream_keeps_what_decodes(tmp_path, video_maker):
    path = video_maker(tmp_path / "v.ts", 10.0, fps=8)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    frames, info = sample_frames(cut)
    assert 1 <= len(frames) < 3 and info.decoded < 80


def test_bad_fps(tmp_path, video_maker):
    with pytest.raises(ValueError, match="fps"):
        sample_frames(tmp_path / "x.mp4", fps=0)
