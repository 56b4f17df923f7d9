"""The full-size figures' tools: the meta-device replay gives the CPU allocator's peak and the flop counter's FLOPs
of a real call, the composed step equals the whole forward, and the analytic FLOPs equal the counted ones."""

import pytest
import torch

import bench.full_size as fs
import bench.model as bm
from bench.common import count_flops, meta_replay, profile_call

TINY = dict(num_layers=4, num_attention_heads=2, attention_head_dim=32, caption_channels=48, cross_attention_dim=64)


@pytest.fixture(scope="module")
def tiny_case():
    model = bm.build(TINY, 16, "cpu", torch.float32)
    return bm.Case(model, 2, 16, cfg=True, device=torch.device("cpu"), dtype=torch.float32)


@pytest.mark.parametrize("variant", [None, 0.25, 1.0])
def test_meta_replay_matches_allocator_and_flop_counter(tiny_case, variant):
    real_peak, _ = profile_call(tiny_case.forward(variant))
    _, real_flops = count_flops(tiny_case.forward(variant))
    with torch.device("meta"):
        meta = bm.build(TINY, 16, "meta", torch.float32)
    case = fs.meta_case(meta, 2, 128, torch.float32)
    peak, flops = meta_replay(case.forward(variant))
    assert flops == real_flops
    assert abs(peak - real_peak) <= 0.03 * real_peak, (peak, real_peak)  # measured: equal to 1%


@pytest.mark.parametrize("variant", [None, 0.25, 1.0])
def test_analytic_flops_equal_counted(tiny_case, variant):
    _, counted = count_flops(tiny_case.forward(variant))
    assert bm._analytic(tiny_case, variant) == pytest.approx(counted, rel=2e-3)


def test_composed_step_equals_whole_forward(tiny_case, monkeypatch):
    monkeypatch.setattr(fs, "GLOBAL_LAYERS", 4)
    monkeypatch.setattr(fs, "SUBJECT_LAYERS", 2)
    figures = fs.block_figures(tiny_case, "cpu")
    for variant in (None, 0.25, 1.0, "tf"):
        _, counted = count_flops(tiny_case.forward(variant))
        assert fs.composed(figures, tiny_case, variant)["TFLOP"] * 1e12 == pytest.approx(counted, rel=1e-6)
