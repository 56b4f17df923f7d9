import json
import math

import pytest
import torch

from bench.common import (
    Ratio,
    bench_parser,
    format_table,
    measure_peak_memory,
    ratio,
    report,
    resolve_device,
    time_call,
    write_json,
)


def test_bench_parser_shared_options():
    args = bench_parser("x").parse_args(["--quick", "--json", "o.json", "--device", "cpu", "--threads", "2"])
    assert args.quick and args.json == "o.json" and args.device == "cpu" and args.threads == 2
    defaults = bench_parser("x").parse_args([])
    assert not defaults.quick and defaults.json is None and defaults.device == "auto" and defaults.threads == 0
    with pytest.raises(SystemExit):
        bench_parser("x").parse_args(["--device", "tpu"])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_time_call_counts_calls_and_orders_stats():
    calls = []
    result = time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(result["times"]) == 3
    assert result["min_s"] <= result["median_s"] and all(t >= 0 for t in result["times"])
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)


def test_measure_peak_memory_sees_a_large_cpu_allocation():
    def allocate():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x.add_(1)
        return float(x[0])

    small = measure_peak_memory(lambda: None, "cpu")
    big = measure_peak_memory(allocate, "cpu")
    assert big >= 32 * 2**20  # sampled RSS: approximate, but a touched 64 MiB tensor must show
    assert small < big


def test_ratio_helpers():
    assert ratio(1.0, 4.0) == 0.25 and math.isnan(ratio(1.0, 0.0))
    r = Ratio(ours=2.0, baseline=8.0)
    assert r.value == 0.25 and r.speedup == 4.0 and str(r) == "0.25x"


def test_format_table_markdown():
    table = format_table([{"a": 1, "b": "x|y"}, {"a": 0.5, "c": float("nan")}], ["a", "b", "c"])
    lines = table.splitlines()
    assert lines[0].startswith("| a") and set(lines[1]) <= {"|", "-"}
    assert "x\\|y" in lines[2] and "n/a" in lines[3] and lines[3].count("|") == 4
    assert "| -" in lines[3]  # missing cell
    with pytest.raises(ValueError, match="columns"):
        format_table([], [])


def test_write_json_atomic_and_nan_to_null(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"x": float("nan"), "y": [1, float("inf")], "r": Ratio(1, 2), "t": torch.tensor(3.0)})
    data = json.loads(path.read_text())
    assert data == {"x": None, "y": [1, None], "r": {"ours": 1, "baseline": 2, "ratio": 0.5}, "t": 3.0}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary files left behind
    with pytest.raises(TypeError, match="serialise"):
        write_json(tmp_path / "bad.json", {"o": object()})
    assert not (tmp_path / "bad.json").exists()


def test_report_prints_and_writes(tmp_path, capsys):
    args = bench_parser("x").parse_args(["--json", str(tmp_path / "out.json"), "--device", "cpu"])
    payload = report("T", [{"n": 1}], ["n"], args, extra={"notes": ["hello"]})
    out = capsys.readouterr().out
    assert "## T" in out and "| n |" in out and "- hello" in out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["title"] == "T" and data["rows"] == [{"n": 1}] and data["environment"]["device"] == "cpu"
    assert payload["notes"] == ["hello"]


def test_parse_numbers_reads_a_comma_separated_option():
    from bench.common import parse_numbers

    assert parse_numbers("0.5, 0.75,1,", "--starts") == [0.5, 0.75, 1.0]


def test_parse_numbers_names_the_option_and_the_text():
    from bench.common import parse_numbers
    from lay2story_core.consistency.box_control import check_box_strength

    with pytest.raises(ValueError, match=r"^--starts: expected comma-separated numbers, got '0.5,x'"):
        parse_numbers("0.5,x", "--starts")
    with pytest.raises(ValueError, match=r"^--strengths: .* got '0.5,2'"):  # the check's error, under one line
        parse_numbers("0.5,2", "--strengths", check_box_strength)
