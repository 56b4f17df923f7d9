"""``bench.redo``: the bars it reports, the conditional-half cache row, and a one-story smoke run on the demo."""

from __future__ import annotations

import json

import torch

from bench import redo
from lay2story_core.pipelines.redo_identity import IdentityCache


def _row(mode, kv, agreement, ratio, kept=True):
    return {"mode": mode, "keys_values": kv, "agreement": agreement, "ratio": ratio, "kept_identical": kept}


def test_bars_compare_the_figures_the_issue_names():
    rows = [_row("lay2story", "rederive", 0.95, 0.4), _row("training_free", "rederive", 0.5, 0.45),
            _row("none", "none", 0.2, 0.2)]
    assert all("(met)" in line for line in redo.bars(rows))
    rows[1]["agreement"], rows[0]["ratio"], rows[2]["kept_identical"] = 0.3, 0.6, False
    missed = redo.bars(rows)
    assert ["MISSED" in line for line in missed] == [False, True, True, True]


def test_the_conditional_half_keeps_group_0_only():
    keys = torch.arange(12.0).view(3, 2, 2)
    cache = IdentityCache({}, {(1, 0): (keys, -keys, torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1]))}, 4)
    half = redo.conditional_half(cache)
    k, v, groups, frames = half.consistency[(1, 0)]
    assert torch.equal(k, keys[[0, 2]]) and torch.equal(v, -keys[[0, 2]]) and groups.tolist() == [0, 0]
    assert frames.tolist() == [0, 1] and half.num_steps == 4
    assert redo.Row("training_free", "cached, conditional half").redo_kwargs() == {"kv": "cached"}
    assert redo.Row("none", "none").redo_kwargs() == {"identity_frames": 0}


def test_a_one_story_run_reports_every_row(tmp_path):
    payload = redo.main(["--quick", "--stories", "1", "--steps", "2", "--threads", "1", "--json",
                         str(tmp_path / "redo.json")])
    assert [(r["mode"], r["keys_values"]) for r in payload["rows"]] == [(r.mode, r.keys_values) for r in redo.ROWS]
    assert all(r["kept_identical"] and r["redo_s"] > 0 for r in payload["rows"])
    assert json.loads((tmp_path / "redo.json").read_text())["rows"][0]["extra_bytes"] > 0
