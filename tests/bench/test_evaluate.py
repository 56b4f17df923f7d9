import json

import pytest

from bench import evaluate


def _run(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        evaluate.main([str(a) for a in argv])
    return info.value.code, capsys.readouterr().err


def test_evaluate_full_run_writes_table_and_json(bench_dirs, tiny_backbones, tmp_path, capsys):
    out = tmp_path / "eval.json"
    payload = evaluate.main(["--stories", str(bench_dirs["stories"]), "--generated", str(bench_dirs["generated"]),
                             "--clip", tiny_backbones["clip"], "--dreamsim", tiny_backbones["dreamsim"],
                             "--real", str(bench_dirs["real"]), "--method", "tiny", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "Lay2Story w/ lc (paper)" in printed and "| tiny" in printed
    data = json.loads(out.read_text())
    methods = [row["Method"] for row in data["rows"]]
    assert methods[:4] == ["1Prompt1Story (paper)", "FLUX.1-dev IPA (paper)", "Lay2Story w/o lc (paper)",
                           "Lay2Story w/ lc (paper)"] and methods[-1] == "tiny"
    summary = data["summary"]
    assert summary["stories"] == 2 and summary["frames"] == 9
    assert 0.0 <= summary["dreamsim"] <= 2.0 and -1.0 <= summary["clip_i"] <= 1.0
    assert 0.0 <= summary["recall_at_1"] <= 1.0 and summary["fid"] > 0
    assert summary["seconds_per_story"] == pytest.approx(6.5) and summary["peak_memory_gb"] == pytest.approx(5.0)
    assert data["models"]["fid_extractor"] == "clip[clip]"  # no --inception: labelled CLIP-feature FID
    assert data["models"]["dreamsim"].startswith("dreamsim-recipe-untuned[")
    assert [s["name"] for s in data["stories"]] == ["alpha", "beta"]
    assert payload["summary"] == data["summary"]


def test_identical_frames_score_best(bench_dirs, tiny_backbones, tmp_path):
    from PIL import Image

    same = tmp_path / "same"
    for story in ("alpha", "beta"):
        frames = sorted((bench_dirs["generated"] / story).glob("frame_*.png"))
        (same / story).mkdir(parents=True)
        first = Image.open(frames[0])
        for i in range(len(frames)):
            first.save(same / story / f"frame_{i:03d}.png")
    common = ["--stories", str(bench_dirs["stories"]), "--clip", tiny_backbones["clip"],
              "--dreamsim", tiny_backbones["dreamsim"]]
    ident = evaluate.run(evaluate.build_parser().parse_args(common + ["--generated", str(same)]))["summary"]
    varied = evaluate.run(evaluate.build_parser().parse_args(
        common + ["--generated", str(bench_dirs["generated"])]))["summary"]
    assert ident["clip_i"] == pytest.approx(1.0, abs=1e-5) and varied["clip_i"] < ident["clip_i"]
    assert ident["dreamsim"] == pytest.approx(0.0, abs=1e-5) and varied["dreamsim"] > ident["dreamsim"]
    assert ident["recall_at_1"] == 0.0  # identical frames cannot be told apart


def test_missing_generated_folder(bench_dirs, tmp_path, capsys):
    code, err = _run(capsys, "--stories", bench_dirs["stories"], "--generated", tmp_path / "nope")
    assert code == 2 and "generated" in err and "does not exist" in err


def test_missing_story_folder(bench_dirs, capsys):
    (bench_dirs["stories"] / "gamma.json").write_text((bench_dirs["stories"] / "alpha.json").read_text())
    code, err = _run(capsys, "--stories", bench_dirs["stories"], "--generated", bench_dirs["generated"])
    assert code == 2 and "no folder for story 'gamma'" in err


def test_missing_frame(bench_dirs, capsys):
    (bench_dirs["generated"] / "beta" / "frame_002.png").unlink()
    code, err = _run(capsys, "--stories", bench_dirs["stories"], "--generated", bench_dirs["generated"])
    assert code == 2 and "'beta' has 5 frames" in err and "frame_002" in err


def test_frame_count_mismatch(bench_dirs, capsys):
    src = bench_dirs["generated"] / "alpha" / "frame_000.png"
    (bench_dirs["generated"] / "alpha" / "frame_004.png").write_bytes(src.read_bytes())
    code, err = _run(capsys, "--stories", bench_dirs["stories"], "--generated", bench_dirs["generated"])
    assert code == 2 and "'alpha' has 4 frames but the folder has 5" in err and "frame_004.png" in err


def test_missing_backbone_and_story_paths(bench_dirs, tmp_path, capsys):
    code, err = _run(capsys, "--stories", bench_dirs["stories"], "--generated", bench_dirs["generated"],
                     "--clip", tmp_path / "no_clip")
    assert code == 2 and "--clip" in err and "no_clip" in err
    code, err = _run(capsys, "--stories", tmp_path / "none.json", "--generated", bench_dirs["generated"])
    assert code == 2 and "none.json" in err and "does not exist" in err


def test_bad_story_file_names_the_field(bench_dirs, capsys):
    bad = json.loads((bench_dirs["stories"] / "alpha.json").read_text())
    bad["frames"][1]["subjects"][0]["box"] = [0.9, 0.1, 0.2, 0.5]
    (bench_dirs["stories"] / "alpha.json").write_text(json.dumps(bad))
    code, err = _run(capsys, "--stories", bench_dirs["stories"], "--generated", bench_dirs["generated"])
    assert code == 2 and "frames[1].subjects[0].box" in err and "0.2" in err


def test_bundled_prompt_set_is_valid():
    from pathlib import Path

    from lay2story_core.eval import load_prompt_set

    entries = load_prompt_set(Path(evaluate.__file__).parent / "data" / "mini_prompt_set.json")
    counts = sorted(e.story.num_frames for e in entries)
    assert counts == [4, 4, 5, 5, 6, 6]
    assert any(len(e.story.characters) > 1 for e in entries)
    subjects = [s for e in entries for f in e.story.frames for s in f.subjects]
    assert all(s.box is not None for s in subjects) and sum(s.caption is not None for s in subjects) > 20
    assert any(not f.subjects for e in entries for f in e.story.frames)  # layout-free frames
