import json

import pytest

from bench import run_all

_ATTENTION_LIKE = {
    "title": "fake attention",
    "columns": ["frames", "tokens", "dense_s", "sparse_s", "speedup", "dense_MB", "sparse_MB"],
    "rows": [
        {"frames": f, "tokens": t, "dense_s": 0.01 * f * t, "sparse_s": 0.001 * f, "speedup": 10.0 * t,
         "dense_MB": f * f * t, "sparse_MB": f}
        for t in (1, 4) for f in (4, 8, 16)
    ] + [{"frames": 32, "tokens": 4, "dense_s": "infeasible", "sparse_s": 0.03, "speedup": None,
          "dense_MB": "infeasible", "sparse_MB": 32}],
    "notes": ["a note"],
}


def test_plot_spec_follows_the_naming_convention():
    spec = run_all.plot_spec(_ATTENTION_LIKE)
    assert spec["x"] == "frames" and spec["time"] == ["dense_s", "sparse_s"]
    assert spec["memory"] == ["dense_MB", "sparse_MB"] and spec["group_by"] == ["tokens"]
    panels = run_all.panels_for("attention", _ATTENTION_LIKE)
    assert [p.title for p in panels] == ["attention: time", "attention: memory"]
    labels = [s.label for s in panels[0].series]
    assert labels == ["dense_s (tokens=1)", "sparse_s (tokens=1)", "dense_s (tokens=4)", "sparse_s (tokens=4)"]
    assert panels[0].series[3].xs == (4.0, 8.0, 16.0, 32.0)  # "infeasible" cells are left out, not plotted as 0
    assert panels[0].series[2].xs == (4.0, 8.0, 16.0)
    hinted = dict(_ATTENTION_LIKE, plot={"x": "frames", "time": ["sparse_s"], "memory": [], "group_by": []})
    assert [p.title for p in run_all.panels_for("a", hinted)] == ["a: time"]
    assert run_all.plot_spec({"columns": ["n"], "rows": [{"n": 1}]}) is None


def test_run_all_collects_reports_and_skips_missing(tmp_path, monkeypatch, capsys):
    present = {"attention", "train"}
    monkeypatch.setattr(run_all, "available", lambda name: name in present)

    def fake_run_one(name, args, out):
        assert args.quick
        if name == "train":
            return {"benchmark": name, "status": "failed (exit 1)", "wall_s": 0.1, "note": "log"}, None
        return {"benchmark": name, "status": "ok", "wall_s": 0.2, "rows": 7, "baseline_in_run": True}, \
            _ATTENTION_LIKE

    monkeypatch.setattr(run_all, "run_one", fake_run_one)
    out = tmp_path / "report"
    payload = run_all.main(["--quick", "--out", str(out), "--json", str(tmp_path / "summary.json")])
    status = {r["benchmark"]: r["status"] for r in payload["rows"]}
    assert status == {"attention": "ok", "model": "skipped", "sampling": "skipped", "train": "failed (exit 1)",
                      "shapestory": "skipped", "redo": "skipped", "comic_bubbles": "skipped"}
    md = (out / "report.md").read_text()
    assert "## fake attention (`bench.attention`)" in md and "- a note" in md and "![time and memory" in md
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"attention"} and report["plot"] == "report.png"
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["rows"][0]["benchmark"] == "attention"
    assert "skipped bench.model" in capsys.readouterr().out


def test_run_one_reports_a_failing_subprocess(tmp_path):
    args = run_all.build_parser().parse_args(["--quick", "--timeout", "60"])
    row, payload = run_all.run_one("no_such_benchmark_xyz", args, tmp_path)
    assert payload is None and row["status"].startswith("failed (exit")
    log = (tmp_path / "logs" / "no_such_benchmark_xyz.log").read_text()
    assert "bench.no_such_benchmark_xyz" in log and "--quick" in log


def test_only_rejects_unknown_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_all.main(["--only", "attention,nope", "--out", str(tmp_path)])
    assert info.value.code == 2 and "nope" in capsys.readouterr().err
