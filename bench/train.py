"""Trainer step time and throughput at a medium CPU config, with live vs cached T5/VAE features.

    python -m bench.train [--quick] [--json PATH] [--device cpu] [--threads N] [--steps N]

A "medium" random model (PixArt 8 blocks x 128 wide, T5 4 layers x 128, a 4-level VAE, 128 px stories of 4 to 6
frames, 2 stories per step) is trained for a few steps in each configuration: stage 1 (global branch) and stage 2
(subject branch), features encoded live (T5 + VAE every step) or read from the feature cache (``training/cache.py``).
One step = load a batch, assemble inputs (encoding when live), forward, backward, AdamW step; ``features_s`` is the
input-assembly part. Real T5-XXL dwarfs this toy T5, so on real models caching saves much more than shown here.
On a CPU shared with other jobs use ``--threads 1``: oversubscribed OpenMP threads make steps 5-10x slower.
"""

from __future__ import annotations

import os
import tempfile

import torch

from bench.common import bench_parser, measure_peak_memory, prepare, ratio, run_and_report, time_call

COLUMNS = ["stage", "features", "step_s", "step_min_s", "features_s", "stories_per_s", "frames_per_s", "peak_MB",
           "speedup"]


def _assets(folder: str, quick: bool) -> dict:
    from training.tiny_assets import TinyModelConfig, make_tiny_model, write_story_set

    if quick:
        config, size, stories = TinyModelConfig(), 32, 4
    else:
        config = TinyModelConfig(num_layers=8, heads=4, head_dim=32, text_dim=128, text_layers=4,
                                 vae_channels=(32, 64, 64, 64), sample_size=16)
        size, stories = 128, 8
    model = make_tiny_model(os.path.join(folder, "model"), config)
    data = write_story_set(os.path.join(folder, "data"), "train", stories, size=size)
    return {"model": model, "data": data, "size": size}


def _cache(assets: dict, folder: str) -> str:
    from training.cache import main as cache_main
    from training.cache import parse_args as cache_args

    out = os.path.join(folder, "cache")
    cache_main(cache_args(["--pretrained_model_name_or_path", assets["model"], "--train_data", assets["data"],
                           "--feature_cache", out, "--resolution", str(assets["size"]), "--max_length", "32"]))
    return out


class _Stepper:
    """The trainer's step (same functions as ``training/train.py``) without accelerate's bookkeeping."""

    def __init__(self, assets: dict, stage: int, cache: str | None, device: torch.device, folder: str) -> None:
        from training.buckets import BucketTable
        from training.feature_cache import FeatureCache
        from training.features import CaptionEncoder, DropoutConfig
        from training.losses import GaussianDiffusion
        from training.modeling import VaeInfo, load_components
        from training.train import parse_args

        argv = ["--stage", str(stage), "--pretrained_model_name_or_path", assets["model"], "--train_data",
                assets["data"], "--output_dir", folder, "--resolution", str(assets["size"]), "--max_length", "32",
                "--train_batch_size", "2", "--learning_rate", "1e-4"]
        self.args = args = parse_args(argv + (["--feature_cache", cache] if cache else []))
        self.cache = FeatureCache(cache) if cache else None
        info = VaeInfo(**self.cache.meta["vae"]) if self.cache else None
        self.components = load_components(args, device, "no", need_text=cache is None, need_vae=cache is None,
                                          vae_info=info)
        self.components.model.to(device)
        self.table = BucketTable(args.resolution, self.components.vae_info.scale_factor * 2)
        self.diffusion = GaussianDiffusion(1000)
        self.captions = (CaptionEncoder(32, empty_states=self.cache.empty_text) if self.cache else
                         CaptionEncoder(32, tokenizer=self.components.tokenizer,
                                        text_encoder=self.components.text_encoder))
        self.dropout = DropoutConfig()
        self.params = [p for p in self.components.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=args.learning_rate, weight_decay=0.03)
        self.generator = torch.Generator().manual_seed(0)
        self.device = device
        self.batches = self._batches()
        self.feature_times: list[float] = []
        self.frames = 0

    def _batches(self):
        from training.dataset import StoryDataset, StoryIndex, collate_examples

        dataset = StoryDataset(StoryIndex([self.args.train_data[0]], self.table), 6, self.cache)
        while True:
            for start in range(0, len(dataset) - 1, 2):
                yield collate_examples([dataset[start], dataset[start + 1]])

    def step(self) -> None:
        import time

        from training.features import compute_loss, prepare_inputs

        batch = next(self.batches)
        start = time.perf_counter()
        inputs = prepare_inputs(batch, stage=self.args.stage, captions=self.captions, vae=self.components.vae,
                                vae_info=self.components.vae_info, diffusion=self.diffusion,
                                generator=self.generator, dropout=self.dropout, patch_size=2, device=self.device)
        self.feature_times.append(time.perf_counter() - start)
        loss = compute_loss(self.components.model, inputs, self.diffusion).loss.mean()
        if self.args.stage == 2 and inputs.subject is None:
            loss = loss + 0.0 * sum(p.sum() for p in self.params)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.frames += batch.num_frames


def run(args) -> dict:
    device = prepare(args)
    steps = args.steps or (2 if args.quick else 6)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as folder:
        assets = _assets(folder, args.quick)
        cache = _cache(assets, folder)
        for stage in (1, 2):
            live_s = None
            for features in ("live", "cached"):
                stepper = _Stepper(assets, stage, cache if features == "cached" else None, device,
                                   os.path.join(folder, f"out-{stage}-{features}"))
                timing = time_call(stepper.step, repeats=steps, warmup=1, device=device)
                calls = steps + 1
                frames_per_step = stepper.frames / calls
                features_s = sorted(stepper.feature_times[1:])[len(stepper.feature_times[1:]) // 2]
                peak = measure_peak_memory(stepper.step, device)
                step_s = timing["median_s"]
                live_s = step_s if features == "live" else live_s
                rows.append({
                    "stage": stage, "features": features, "step_s": step_s, "step_min_s": timing["min_s"],
                    "features_s": features_s, "stories_per_s": 2 / step_s,
                    "frames_per_s": frames_per_step / step_s, "peak_MB": peak / 2**20,
                    "speedup": None if features == "live" else ratio(live_s, step_s),
                })
    size = "tiny (quick)" if args.quick else "medium"
    return {
        "title": f"Trainer step, {size} model, 2 stories/step, live vs cached features ({device})",
        "columns": COLUMNS,
        "rows": rows,
        "notes": ["step_s / step_min_s: median / fastest timed step (data, input assembly, forward, backward, AdamW);"
                  " on a shared CPU the fastest is the least disturbed by other processes;",
                  "features_s: median input assembly (T5 + VAE encoding live; cached: reading moments, sampling),",
                  "speedup = live step_s / cached step_s; peak_MB on CPU is sampled RSS growth (approximate)."],
    }


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0, help="timed steps per configuration (0: 6, quick: 2)")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
