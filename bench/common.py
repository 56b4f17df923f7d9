"""Shared helpers for the benchmark scripts in ``bench/``.

Every benchmark is run as ``python -m bench.<name> [--quick] [--json PATH] [--device D] [--threads N]``, exposes
``run(args) -> dict`` returning at least ``{"title", "columns", "rows"}`` and ``main(argv=None)`` which calls
:func:`report`. This module holds the pieces they share: the argument parser, device resolution, timing, peak
memory, the Markdown table and the atomic JSON writer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Ratio",
    "apply_threads",
    "count_flops",
    "meta_replay",
    "profile_call",
    "bench_parser",
    "environment_info",
    "format_table",
    "format_value",
    "write_text",
    "measure_peak_memory",
    "parse_numbers",
    "prepare",
    "ratio",
    "report",
    "resolve_device",
    "run_and_report",
    "time_call",
    "write_json",
]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def bench_parser(description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the options every benchmark shares.

    ``--quick`` (tiny sizes, for CI and smoke tests), ``--json PATH`` (also write the result as JSON),
    ``--device {auto,cpu,cuda}`` and ``--threads N`` (``torch.set_num_threads``; 0 keeps torch's default).
    Scripts add their own options to the returned parser.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test / CI)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the result to this JSON file")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to run (default: auto)")
    parser.add_argument(
        "--threads", type=int, default=0, metavar="N", help="torch CPU threads (0 = keep torch's default)"
    )
    return parser


def parse_numbers(text: str, field: str, check=float) -> list[float]:
    """A comma-separated option (``"0.5, 0.75,1"``) as numbers, each passed through ``check`` (which may raise
    ``ValueError``); one error naming ``field`` and the text otherwise."""
    try:
        return [check(float(v)) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"{field}: expected comma-separated numbers, got {text!r} ({err})") from None


def resolve_device(arg: str | torch.device | None) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` (or a ``torch.device``) into a ``torch.device``.

    ``auto`` picks CUDA when available. Asking for ``cuda`` on a machine without it raises ``ValueError``.
    """
    if isinstance(arg, torch.device):
        device = arg
    else:
        name = "auto" if arg is None else str(arg)
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"device: unknown device {name!r}; use one of {DEVICE_CHOICES}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {str(device)!r} requested but CUDA is not available on this machine")
    return device


def apply_threads(threads: int | None) -> None:
    """Apply ``--threads`` (0 or None keeps torch's default)."""
    if threads is None or threads == 0:
        return
    if threads < 0:
        raise ValueError(f"threads: must be >= 0, got {threads!r}")
    torch.set_num_threads(int(threads))


def prepare(args: Any) -> torch.device:
    """Apply ``args.threads`` and return the resolved ``args.device``; call this first in ``run(args)``."""
    apply_threads(getattr(args, "threads", 0))
    return resolve_device(getattr(args, "device", "auto"))


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def time_call(
    fn: Callable[[], Any], *, repeats: int, warmup: int = 1, device: torch.device | str | None = None
) -> dict:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    On CUDA devices the device is synchronised before starting and after each call so queued kernels are counted.
    Returns ``{"median_s", "min_s", "mean_s", "times"}`` (seconds, ``times`` in call order).
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats!r}")
    if warmup < 0:
        raise ValueError(f"warmup: must be >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
        "times": times,
    }


def _read_rss_bytes() -> int:
    """Resident set size of this process from ``/proc/self/statm`` (Linux), else ``psutil``, else 0."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            fields = fh.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        return 0


class _RssSampler:
    """Background thread sampling RSS about every ``interval`` seconds; keeps the maximum seen."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.peak = _read_rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _read_rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _read_rss_bytes())


OP_KINDS = (("attention", ("attention", "sdpa", "flex")), ("matmul", ("addmm", "::mm", "bmm", "matmul", "conv")),
            ("copies", ("copy_", "index_select", "index_copy", "index_add", "cat", "fill_", "zero_", "clone",
                        "contiguous", "gather", "scatter")))


def profile_call(fn: Callable[[], Any]) -> tuple[int | None, dict[str, float]]:
    """One CPU call under the profiler: its peak tensor memory (as :func:`measure_peak_memory`) and where its time
    went, in seconds of self CPU time per kind of op (``attention``, ``matmul``, ``copies``, ``other``)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    kinds = {name: 0.0 for name, _ in OP_KINDS} | {"other": 0.0}
    for event in prof.key_averages():
        name = event.key
        if name.startswith("[memory]") or not name.startswith("aten::"):
            continue
        kind = next((k for k, keys in OP_KINDS if any(key in name for key in keys)), "other")
        kinds[kind] += event.self_cpu_time_total / 1e6
    events = prof.profiler.kineto_results.events()
    allocations = sorted((ev.start_ns(), ev.nbytes()) for ev in events
                         if ev.name() == "[memory]" and ev.device_type() == DeviceType.CPU)
    current = peak = 0
    for _, nbytes in allocations:
        current += nbytes
        peak = max(peak, current)
    return (int(peak) if allocations else None), kinds


def _profiled_peak_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak of live CPU tensor memory during ``fn()``, from the PyTorch profiler's allocator events.

    Every CPU allocation and free made through PyTorch's allocator during the call is replayed in order; the peak
    of the running sum is the call's peak tensor memory (what the call itself allocated, independent of what the
    process held before and of the C allocator's caching). ``None`` if the profiler gives no memory events.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    allocations = sorted(
        (ev.start_ns(), ev.nbytes()) for ev in events if ev.name() == "[memory]" and ev.device_type() == DeviceType.CPU
    )
    if not allocations:
        return None
    current = peak = 0
    for _, nbytes in allocations:
        current += nbytes
        peak = max(peak, current)
    return int(peak)


def measure_peak_memory(fn: Callable[[], Any], device: torch.device | str | None) -> int:
    """Peak memory in bytes used by one call of ``fn()``.

    CUDA: resets the allocator's peak statistics and returns ``max_memory_allocated`` minus what was allocated
    before the call (tensors allocated by PyTorch only; not the caching allocator's reserve or other processes).

    CPU: the peak of live tensor memory allocated by the call, replayed from the PyTorch profiler's allocator events
    (exact for PyTorch tensors; the profiler slows the call, so time it separately). If the profiler yields no
    events, falls back to APPROXIMATE RSS sampling: a background thread reads ``/proc/self/statm`` about every
    1 ms and the result is the highest RSS seen minus the RSS just before the call.
    """
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return max(0, int(torch.cuda.max_memory_allocated(dev) - before))
    try:
        profiled = _profiled_peak_bytes(fn)
    except (RuntimeError, AttributeError):  # profiler unavailable in this build
        profiled = None
    if profiled is not None:
        return profiled
    before = _read_rss_bytes()
    with _RssSampler() as sampler:
        fn()
    return max(0, int(sampler.peak - before))


def _register_cpu_flash_flops() -> None:
    """torch's flop counter knows the CUDA fused SDPA kernels but not the CPU flash kernel; count it the same way
    (idempotent: registers once in torch's own table)."""
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry or op.default in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _cpu_flash(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)  # shapes (the registry passes shapes)


class _FlashOnMeta(torch.overrides.TorchFunctionMode):
    """Meta-device stand-in for ``scaled_dot_product_attention`` with a fused kernel's memory: the output only, no
    ``(L, L)`` scores (the math fallback the meta device would otherwise take); counts its FLOPs (2 per MAC)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            query, key, value = args[:3]
            *batch, q_len, head = query.shape
            k_len, v_head = key.shape[-2], value.shape[-1]
            self.flops += 2 * math.prod(batch) * q_len * k_len * (head + v_head)
            return query.new_empty((*batch, q_len, v_head))
        return func(*args, **kwargs)


class _LiveStorage(torch.utils._python_dispatch.TorchDispatchMode):
    """Replays tensor lifetimes: every storage an op creates is live until its last tensor dies (a weak reference to
    the storage); ``peak`` is the largest sum of live bytes seen after an op. Outputs that alias an input (views,
    in-place ops) are not new storage."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[Any, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._pytree import tree_leaves

        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in inputs and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            del self.live[key]
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def meta_replay(fn: Callable[[], Any]) -> tuple[int, int]:
    """``(peak bytes, FLOPs)`` of ``fn()`` run on meta tensors: no compute, any size. Peak = the most bytes the call
    itself holds at once (tensor lifetimes replayed, attention with a fused kernel's memory); FLOPs from torch's
    flop counter plus the attention calls. Checked against the CPU allocator on a real run
    (``tests/bench/test_full_size.py``)."""
    from torch.utils.flop_counter import FlopCounterMode

    flash = _FlashOnMeta()
    with FlopCounterMode(display=False) as counter, _LiveStorage() as live, flash:
        fn()
    return live.peak, int(counter.get_total_flops()) + flash.flops


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(fn(), FLOPs)`` counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and every
    SDPA kernel, the CPU flash kernel included). The counter costs little, so the call can be timed as well."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_flash_flops()
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, int(counter.get_total_flops())


@dataclass(frozen=True)
class Ratio:
    """``ours / baseline`` with the two figures kept, e.g. for a speed-up or memory saving."""

    ours: float
    baseline: float

    @property
    def value(self) -> float:
        return ratio(self.ours, self.baseline)

    @property
    def speedup(self) -> float:
        """``baseline / ours``: > 1 means ours is faster (or smaller)."""
        return ratio(self.baseline, self.ours)

    def __str__(self) -> str:
        return f"{self.value:.2f}x"

    def to_dict(self) -> dict:
        return {"ours": self.ours, "baseline": self.baseline, "ratio": self.value}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; ``nan`` when the denominator is 0 or not finite."""
    if denominator == 0 or not math.isfinite(denominator) or not math.isfinite(numerator):
        return float("nan")
    return float(numerator) / float(denominator)


def format_value(value: Any) -> str:
    """How a single cell is written in :func:`format_table`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, Ratio):
        return str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns`` in order; missing cells are written ``-``."""
    if not columns:
        raise ValueError("columns: need at least one column")
    header = [str(c) for c in columns]
    body = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in body]
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Ratio):
        return obj.to_dict()
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"write_json: cannot serialise object of type {type(obj).__name__}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically. NaN/inf are written as ``null``."""
    text = json.dumps(_sanitize(payload), indent=2, default=_json_default, allow_nan=False)
    return write_text(path, text + "\n")


def _sanitize(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def environment_info(device: torch.device | str | None = None) -> dict:
    """Versions and hardware, recorded in every report so figures can be compared."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        if dev.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def report(title: str, rows: Sequence[dict], columns: Sequence[str], args: Any, extra: dict | None = None) -> dict:
    """Print ``title`` and the Markdown table; write the JSON when ``args.json`` is set. Returns the payload."""
    payload: dict = {"title": title, "columns": list(columns), "rows": list(rows)}
    if extra:
        payload.update(extra)
    payload.setdefault("quick", bool(getattr(args, "quick", False)))
    payload.setdefault("environment", environment_info(getattr(args, "device", None) and _safe_device(args)))
    print(f"## {title}\n")
    print(format_table(rows, columns))
    notes = payload.get("notes")
    if notes:
        print()
        for note in [notes] if isinstance(notes, str) else notes:
            print(f"- {note}")
    for table in payload.get("tables", ()):  # further tables of the same run: {"title", "columns", "rows"}
        print(f"\n## {table['title']}\n")
        print(format_table(table["rows"], table["columns"]))
    json_path = getattr(args, "json", None)
    if json_path:
        write_json(json_path, payload)
        print(f"\nwrote {json_path}")
    return payload


def run_and_report(run: Callable[[Any], dict], parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                   errors: tuple[type[BaseException], ...] = (ValueError,)) -> dict:
    """Parse ``argv``, call ``run(args)`` and :func:`report` its result (every key beyond title/columns/rows goes to
    the JSON). The ``errors`` a user can cause exit with status 2 and one line, never a traceback."""
    args = parser.parse_args(argv)
    try:
        payload = run(args)
    except errors as err:
        parser.exit(2, f"error: {err}\n")
    extra = {k: v for k, v in payload.items() if k not in ("title", "columns", "rows")}
    return report(payload["title"], payload["rows"], payload["columns"], args, extra=extra)


def _safe_device(args: Any) -> torch.device | None:
    try:
        return resolve_device(args.device)
    except ValueError:
        return None
