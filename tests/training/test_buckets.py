"""Aspect buckets (PixArt's tables) and the deterministic, sharded, resumable batch sampler."""

from __future__ import annotations

import numpy as np
import pytest

from training.buckets import BucketBatchSampler, BucketTable


def test_512_table_is_pixarts_and_other_resolutions_scale_it():
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_512_BIN

    table = BucketTable(512)
    assert set(table.sizes) == {(int(h), int(w)) for h, w in ASPECT_RATIO_512_BIN.values()}
    assert table.size(table.bucket_of(512, 512)) == (512, 512)
    assert table.size(table.bucket_of(720, 1280)) == tuple(int(v) for v in ASPECT_RATIO_512_BIN["0.57"])
    small = BucketTable(64, multiple=8)
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in small.sizes)
    wide = small.size(small.bucket_of(100, 400))
    assert wide[1] > wide[0] and small.size(small.bucket_of(64, 64)) == (64, 64)
    assert BucketTable(64, multiple=8, enabled=False).sizes == [(64, 64)]
    with pytest.raises(ValueError, match="resolution"):
        BucketTable(60, multiple=16)


def test_batches_share_a_bucket_and_cover_each_index_at_most_once():
    buckets = np.array([0, 1, 0, 1, 2, 0, 1, 0, 2, 2, 0])
    sampler = BucketBatchSampler(buckets, 2, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4  # 5 // 2 + 3 // 2 + 3 // 2
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert all(len({int(buckets[i]) for i in b}) == 1 for b in batches)


def test_order_depends_on_seed_and_epoch_only():
    buckets = np.zeros(40, dtype=int)
    a, b = BucketBatchSampler(buckets, 4, seed=1), BucketBatchSampler(buckets, 4, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(BucketBatchSampler(buckets, 4, seed=2)) != list(a)


def test_ranks_get_disjoint_equal_shares_cut_to_whole_accumulations():
    buckets = np.array([0] * 23 + [1] * 9)
    shares = [list(BucketBatchSampler(buckets, 2, seed=0, num_replicas=3, rank=r, accumulation=2)) for r in range(3)]
    sizes = {len(s) for s in shares}
    assert len(sizes) == 1 and sizes.pop() % 2 == 0  # same count everywhere, whole accumulation cycles
    flat = [i for s in shares for b in s for i in b]
    assert len(flat) == len(set(flat))
    assert len(BucketBatchSampler(buckets, 2, num_replicas=3, rank=1, accumulation=2)) == len(shares[1])


def test_start_resumes_mid_epoch():
    sampler = BucketBatchSampler(np.zeros(20, dtype=int), 2, seed=5)
    full = list(sampler)
    sampler.set_epoch(0, start=3)
    assert list(sampler) == full[3:]
