"""Seconds and peak memory per story: plain PixArt vs Lay2Story (layout on / off) vs training-free, in one run.

    python -m bench.sampling [--quick] [--json PATH] [--device cuda] [--steps N]

Medium CPU config: PixArt 8 blocks x 384 wide at 256 px, a small T5 and a small VAE (random weights: speed and
memory do not depend on them), CFG 4.5, DPM-Solver++. Frames 4/8/16/32 (quick: 4/8). On CUDA (or --full-size) it
also runs PixArt-XL (28 x 1152, T5 width 4096) at 512 and 1024 px with 25 steps. Targets: Lay2Story with layout on
<= 1.25x plain per frame; peak memory no faster than linear in frames.
"""

from __future__ import annotations

import time
from functools import partial

import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from bench.common import bench_parser, measure_peak_memory, prepare, ratio, run_and_report
from lay2story_core.models import SubjectBranch
from lay2story_core.pipelines import StoryPipeline
from lay2story_core.story import Story

COLUMNS = ["config", "frames", "variant", "s_per_story", "s_per_frame", "peak_MB", "MB_per_frame", "time_ratio"]
VARIANTS = (("plain PixArt", "none", True), ("Lay2Story layout on", "lay2story", True),
            ("Lay2Story layout off", "lay2story", False), ("training-free", "training_free", True))


def _tokenizer() -> T5Tokenizer:
    words = "a the red fox hero walking sitting on in at grass tree river night day small big".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,."] + [("\u2581", -4.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_pipeline(size: str, device, dtype) -> StoryPipeline:
    torch.manual_seed(0)
    if size == "xl":
        pixart = PixArtTransformer2DModel(num_layers=28, num_attention_heads=16, attention_head_dim=72,
                                          caption_channels=4096, cross_attention_dim=1152, sample_size=128,
                                          use_additional_conditions=False)
        t5 = T5Config(vocab_size=128, d_model=4096, d_kv=64, d_ff=1024, num_layers=1, num_heads=8,
                      feed_forward_proj="gated-gelu")
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    else:
        layers = 4 if size == "quick" else 8
        pixart = PixArtTransformer2DModel(num_layers=layers, num_attention_heads=6, attention_head_dim=64,
                                          caption_channels=256, cross_attention_dim=384, sample_size=32,
                                          use_additional_conditions=False)
        t5 = T5Config(vocab_size=128, d_model=256, d_kv=32, d_ff=512, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu")
        vae = AutoencoderKL(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    branch = SubjectBranch.from_transformer(pixart)
    with torch.no_grad():
        for block in branch.blocks:
            block.proj_out.weight.normal_(std=0.02)
    pipe = StoryPipeline(tokenizer=_tokenizer(), text_encoder=T5EncoderModel(t5).eval(), vae=vae.eval(),
                         transformer=pixart.eval(), subject_branch=branch.eval())
    return pipe.to(device, dtype)


def story(frames: int, size: int) -> Story:
    """A story with one box per frame covering about 25% of the frame."""
    boxes = [[0.1 + 0.4 * (i % 2), 0.1 + 0.4 * ((i // 2) % 2), 0.6 + 0.4 * (i % 2) - 0.1, 0.6 + 0.4 * ((i // 2) % 2)
              - 0.1] for i in range(frames)]
    return Story.from_dict({
        "version": 1, "width": size, "height": size,
        "characters": [{"id": "hero", "identity": "a small red fox"}],
        "frames": [{"prompt": f"walking on the grass {i}", "subjects": [
            {"character": "hero", "box": boxes[i], "caption": "the fox sitting"}]} for i in range(frames)],
    })


def run(args) -> dict:
    device = prepare(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cases = [("quick", 256, [4, 8], 2)] if args.quick else [("medium", 256, [4, 8, 16, 32], args.steps or 5)]
    if args.full_size or (device.type == "cuda" and not args.quick):
        cases += [("xl", 512, [4, 8, 16, 32], 25), ("xl", 1024, [4, 8, 16, 32], 25)]
    rows = []
    for size_name, px, frame_counts, steps in cases:
        pipe = build_pipeline(size_name, device, dtype)
        label = f"{'PixArt-XL' if size_name == 'xl' else size_name} {px}px, {steps} steps"
        for frames in frame_counts:
            s = story(frames, px)
            base = None
            for variant, mode, layout in VARIANTS:
                call = partial(pipe, s, mode=mode, layout=layout, subject_captions=layout,
                               num_inference_steps=steps, seed=0, output_type="pt")

                start = time.perf_counter()
                call()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                peak = measure_peak_memory(call, device) / 2**20
                base = seconds if base is None else base
                rows.append({"config": label, "frames": frames, "variant": variant, "s_per_story": seconds,
                             "s_per_frame": seconds / frames, "peak_MB": peak, "MB_per_frame": peak / frames,
                             "time_ratio": ratio(seconds, base)})
    return {"title": f"Story sampling, seconds and peak memory per story ({device}, {dtype})", "columns": COLUMNS,
            "rows": rows, "notes": ["time_ratio is against plain PixArt on the same story in the same run",
                                    "one timed call per case (stories are long); peak memory from a second call"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="denoising steps of the CPU config (default 5)")
    parser.add_argument("--full-size", action="store_true", help="also PixArt-XL at 512 and 1024 px")
    return run_and_report(run, parser, argv)


if __name__ == "__main__":
    main()
