"""Run every benchmark in bench/ and write one report (Markdown + JSON + PNG plot of time and memory vs frames).

    python -m bench.run_all [--quick] [--out DIR] [--only attention,model] [--timeout S] [--device D] [--threads N]

Each benchmark runs as its own process (``python -m bench.<name> --json ...``), so one crash or its memory does not
touch the others; its stdout/stderr go to ``<out>/logs/<name>.log``. Benchmarks not present in this checkout are
skipped with a note. Every figure comes from one benchmark's JSON, i.e. ours and its baseline are measured in the
same run; a benchmark whose rows show only one time series is flagged ("no baseline series").

Plot convention (a benchmark can override it with ``"plot": {"x", "time", "memory", "group_by"}`` in its JSON):
x = the ``frames`` column; time series = numeric columns ending in ``_s``/``_ms``; memory series = columns ending in
``_MB``/``_GB``/``_bytes``; series are split by the other integer/string columns (e.g. tokens, coverage).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import bench_parser, environment_info, format_table, run_and_report, write_json, write_text
from lay2story_core.eval.plot import Panel, Series, render_panels

BENCHMARKS: tuple[str, ...] = ("attention", "model", "sampling", "train", "shapestory", "redo", "comic_bubbles")
REPO_ROOT = Path(__file__).resolve().parents[1]
TITLE = "Benchmark suite"
COLUMNS = ["benchmark", "status", "wall_s", "rows", "baseline_in_run", "note"]
_TIME_SUFFIXES = ("_s", "_ms")
_MEMORY_SUFFIXES = ("_mb", "_gb", "_mib", "_gib", "_bytes")


def build_parser():
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/bench", help="report folder (default: out/bench)")
    parser.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark (default 3600)")
    return parser


def available(name: str) -> bool:
    return importlib.util.find_spec(f"bench.{name}") is not None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def plot_spec(payload: dict) -> dict | None:
    """Which columns to plot for one benchmark's payload (its ``plot`` hint, else the naming convention)."""
    rows, columns = payload.get("rows") or [], list(payload.get("columns") or [])
    hint = payload.get("plot") or {}
    x = hint.get("x", "frames")
    rows = [r for r in rows if _is_number(r.get(x))]
    if not rows:
        return None
    time_cols = hint["time"] if "time" in hint else [c for c in columns if c.lower().endswith(_TIME_SUFFIXES)]
    mem_cols = hint["memory"] if "memory" in hint else [c for c in columns if c.lower().endswith(_MEMORY_SUFFIXES)]
    measured = {x, *time_cols, *mem_cols}
    group_by = hint.get("group_by")
    if group_by is None:
        group_by = [c for c in columns if c not in measured
                    and all(isinstance(r.get(c), (str, int)) and not isinstance(r.get(c), bool) for r in rows)
                    and len({r.get(c) for r in rows}) > 1]
    return {"x": x, "time": time_cols, "memory": mem_cols, "group_by": group_by, "rows": rows}


def _series(spec: dict, value_cols: list[str]) -> list[Series]:
    out = []
    groups: dict[tuple, list[dict]] = {}
    for row in spec["rows"]:
        groups.setdefault(tuple(row.get(g) for g in spec["group_by"]), []).append(row)
    for key, rows in groups.items():
        suffix = ", ".join(f"{g}={v}" for g, v in zip(spec["group_by"], key))
        for col in value_cols:
            pts = [(r[spec["x"]], r[col]) for r in rows if _is_number(r.get(col))]
            if pts:
                label = f"{col} ({suffix})" if suffix else col
                out.append(Series(label, tuple(float(p[0]) for p in pts), tuple(float(p[1]) for p in pts)))
    return out


def panels_for(name: str, payload: dict) -> list[Panel]:
    spec = plot_spec(payload)
    if spec is None:
        return []
    panels = []
    for kind, cols in (("time", spec["time"]), ("memory", spec["memory"])):
        series = _series(spec, cols)
        if series:
            ys = [y for s in series for y in s.ys]
            log_y = min(ys) > 0 and max(ys) / min(ys) > 50
            unit = cols[0].rsplit("_", 1)[-1] if len(cols) == 1 or len({c.rsplit("_", 1)[-1] for c in cols}) == 1 \
                else "mixed"
            panels.append(Panel(f"{name}: {kind}", spec["x"], unit, tuple(series), log_y=log_y))
    return panels


def run_one(name: str, args, out: Path) -> tuple[dict, dict | None]:
    """Run ``bench.<name>`` in a subprocess; returns (status row, its JSON payload or None)."""
    json_path = out / "json" / f"{name}.json"
    log_path = out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if json_path.exists():
        json_path.unlink()
    cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(json_path), "--device", args.device,
           "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=args.timeout, check=False)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timeout ({args.timeout:g} s)"
    row = {"benchmark": name, "status": status, "wall_s": time.perf_counter() - start, "note": f"log: {log_path}"}
    payload = None
    if status == "ok":
        try:
            payload = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            row["status"] = "no JSON"
            row["note"] = f"{err}; log: {log_path}"
    if payload is not None:
        row["rows"] = len(payload.get("rows") or [])
        spec = plot_spec(payload)
        row["baseline_in_run"] = bool(spec and len(spec["time"]) > 1)
        if spec and len(spec["time"]) == 1:
            row["note"] = f"no baseline series (one time column); log: {log_path}"
    return row, payload


def markdown_report(status_rows: list[dict], results: dict, plot: str | None, env: dict) -> str:
    lines = [f"# {TITLE}", "", format_table(status_rows, COLUMNS), ""]
    if plot:
        lines += [f"![time and memory against frames]({plot})", ""]
    for name, payload in results.items():
        lines += [f"## {payload.get('title', name)} (`bench.{name}`)", ""]
        lines += [format_table(payload.get("rows") or [], payload.get("columns") or ["-"]), ""]
        notes = payload.get("notes") or []
        lines += [f"- {n}" for n in ([notes] if isinstance(notes, str) else notes)]
        lines.append("")
    lines += ["## Environment", "", "```", json.dumps(env, indent=2), "```", ""]
    return "\n".join(lines)


def run(args) -> dict:
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise ValueError(f"--only: unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status_rows, results, notes = [], {}, []
    for name in names:
        if not available(name):
            status_rows.append({"benchmark": name, "status": "skipped", "note": f"bench/{name}.py not present"})
            notes.append(f"skipped bench.{name}: not present in this checkout")
            continue
        print(f"running bench.{name} ...", flush=True)
        row, payload = run_one(name, args, out)
        status_rows.append(row)
        if payload is not None:
            results[name] = payload
    panels = [p for name, payload in results.items() for p in panels_for(name, payload)]
    plot_name = backend = None
    if panels:
        backend = render_panels(panels, out / "report.png")
        plot_name = "report.png"
    env = environment_info()
    write_text(out / "report.md", markdown_report(status_rows, results, plot_name, env))
    write_json(out / "report.json", {"title": TITLE, "status": status_rows, "results": results,
                                     "plot": plot_name, "plot_backend": backend, "environment": env})
    notes.append(f"report: {out / 'report.md'}, {out / 'report.json'}" + (f", {out / plot_name}" if plot_name else ""))
    return {"title": TITLE, "columns": COLUMNS, "rows": status_rows, "results": results, "notes": notes,
            "out": str(out), "plot": str(out / plot_name) if plot_name else None}


def main(argv=None) -> dict:
    parser = build_parser()
    return run_and_report(run, parser, argv, errors=(ValueError,))


if __name__ == "__main__":
    main(sys.argv[1:])
