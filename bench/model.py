"""Forward time, FLOPs and peak memory: plain PixArt vs the dual-branch Lay2StoryTransformer, measured in one run.

    python -m bench.model [--quick] [--json PATH] [--device cuda] [--full-size] [--sizes 512,1024]
                          [--full-forward 512] [--dtype bf16] [--compile] [--no-medium]

Medium CPU config: 8 blocks, hidden 384 (6 heads x 64), 256 px (32x32 latent, 256 tokens), 4 frames, T5 width
4096 with 120 caption tokens, no CFG. Layout on = one box per frame covering 25% of the frame; layout off =
full-frame masks (100%). It also measures the per-step cost of the subject path's plan (packing + caption
projection) against the global branch, and the forward with the plan rebuilt per call vs built once per pass.

``--full-size``: PixArt-XL-2 (28 blocks x 1152, 16 heads x 72) with a full-size subject branch (14 blocks, random
weights), 4 frames with CFG (batch 8, subject slots on the conditional half, as the pipeline), T5 width 4096, in
``--dtype`` (default bf16). For every size in ``--sizes``: one block of each kind is timed, FLOP-counted
(``torch.utils.flop_counter``) and memory-profiled (allocator events), and one denoising step is composed from them
(28 global + 14 subject blocks + the measured embed/final layers). For the sizes in ``--full-forward`` the whole
step is also run end to end for plain / layout on / layout off / training-free, which checks the composition.
Then the weights per component (bf16) and the predicted GPU memory at 1024 px (``bench/memory_model.py``).
``--compile``: eager vs ``torch.compile`` per model call at the medium config with CFG, the compile time, and the
graphs the next stories compile (``lay2story_core.attention.compiled``).
Targets: layout on <= 1.25x plain, layout off <= 1.7x plain.
"""

from __future__ import annotations

import math

import torch
from diffusers import PixArtTransformer2DModel

from bench.common import (
    bench_parser,
    count_flops,
    format_table,
    measure_peak_memory,
    prepare,
    ratio,
    run_and_report,
    time_call,
)
from lay2story_core.attention import SubjectSlots, TokenPacking
from lay2story_core.consistency import ConsistencyConfig, StoryConsistencyContext, story_consistency_processors
from lay2story_core.models import Lay2StoryTransformer, SubjectBranch, SubjectInputs

COLUMNS = ["config", "frames", "variant", "coverage", "how", "forward_s", "TFLOP", "TFLOP_analytic", "TFLOP/s",
           "peak_MB", "time_ratio", "mem_ratio", "graphs", "target"]
MEDIUM = dict(num_layers=8, num_attention_heads=6, attention_head_dim=64, caption_channels=4096,
              cross_attention_dim=384)
XL = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, caption_channels=4096,
          cross_attention_dim=1152)
TEXT = 120
VARIANTS = (("plain PixArt", None, "-"), ("Lay2Story layout on", 0.25, "<= 1.25x"),
            ("Lay2Story layout off", 1.0, "<= 1.7x"), ("training-free", "tf", "-"))


def build(config: dict, sample_size: int, device, dtype, ms: bool = False) -> Lay2StoryTransformer:
    """PixArt (``ms``: the 1024-MS micro-conditions) + a subject branch with non-zero outputs ("trained")."""
    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(**config, sample_size=sample_size, use_additional_conditions=ms)
    branch = SubjectBranch.from_transformer(pixart)
    with torch.no_grad():
        for block in branch.blocks:
            block.proj_out.weight.normal_(std=0.02)
    return Lay2StoryTransformer(pixart, branch).to(device, dtype).eval()


def box_masks(frames: int, grid: int, coverage: float, device) -> torch.Tensor:
    masks = torch.zeros(frames, grid, grid, dtype=torch.bool)
    side = max(1, round(grid * math.sqrt(coverage)))
    for f in range(frames):
        off = (f * 3) % (grid - side + 1)
        masks[f, off:off + side, off:off + side] = True
    return masks.view(frames, -1).to(device)


class Case:
    """Inputs of one model call: ``frames`` frames (x2 with CFG; slots on the conditional half, one character)."""

    def __init__(self, model, frames: int, latent: int, cfg: bool, device, dtype) -> None:
        gen = torch.Generator().manual_seed(1)
        conf = model.transformer.config
        self.model, self.frames, self.batch = model, frames, frames * (2 if cfg else 1)
        self.grid = latent // conf.patch_size
        self.x = torch.randn(self.batch, 4, latent, latent, generator=gen).to(device, dtype)
        self.text = torch.randn(self.batch, TEXT, conf.caption_channels, generator=gen).to(device, dtype)
        self.mask = torch.ones(self.batch, TEXT, device=device)
        self.t = torch.full((self.batch,), 500, device=device)
        self.added = None
        if model.transformer.use_additional_conditions:
            size = float(latent * 8)
            self.added = {"resolution": torch.tensor([[size, size]], device=device, dtype=dtype).repeat(self.batch, 1),
                          "aspect_ratio": torch.ones(self.batch, 1, device=device, dtype=dtype)}
        self.captions = torch.randn(frames, TEXT, conf.caption_channels, generator=gen).to(device, dtype)
        self.ref = torch.randn(frames, 4, latent, latent, generator=gen).to(device, dtype)
        self.device, self.dtype = device, dtype

    def slots(self, coverage: float) -> SubjectSlots:
        return SubjectSlots.one_per_image(box_masks(self.frames, self.grid, coverage, self.device))

    def subject(self, coverage: float, once: bool = True) -> SubjectInputs:
        """Subject inputs; ``once``: the packing and projected captions built ahead, as once per pass."""
        lat = self.x.shape[-1]
        pad = self.batch - self.frames
        ref = torch.cat([self.ref, self.ref.new_zeros(pad, 4, lat, lat)])
        ref_mask = torch.cat([torch.ones(self.frames, 1, lat, lat), torch.zeros(pad, 1, lat, lat)]).to(self.ref)
        slots = self.slots(coverage)
        inputs = SubjectInputs(slots=slots, caption_embeds=self.captions,
                               caption_mask=torch.ones(self.frames, TEXT, device=self.device),
                               reference_latents=ref, reference_masks=ref_mask)
        if once:
            inputs.packing = TokenPacking.build(slots, self.batch)
            with torch.no_grad():
                inputs.caption_states = self.model.transformer.caption_projection(self.captions)
        return inputs

    def consistency(self) -> StoryConsistencyContext:
        half = self.frames
        masks = box_masks(half, self.grid, 0.25, self.device)
        packing = TokenPacking.build(SubjectSlots.one_per_image(masks), half)
        with torch.no_grad():
            projected = self.model.transformer.caption_projection(self.captions)
        group = torch.tensor([0] * half + [1] * (self.batch - half), device=self.device)
        ctx = StoryConsistencyContext(ConsistencyConfig(), group=group,
                                      identity=torch.ones(self.batch, dtype=torch.bool, device=self.device), step=1)
        ctx.subject_masks = masks.repeat(self.batch // half, 1)
        ctx.regional = (packing, projected, torch.ones(half, TEXT, dtype=torch.bool, device=self.device))
        return ctx

    def forward(self, variant):
        """A no-grad model call for ``variant`` (None: plain, a coverage, or ``"tf"``)."""
        model = self.model
        if variant is None:
            fn = lambda: model.transformer(self.x, encoder_hidden_states=self.text, timestep=self.t,  # noqa: E731
                                           added_cond_kwargs=self.added, encoder_attention_mask=self.mask).sample
        elif variant == "tf":
            ctx = self.consistency()

            def fn():
                with story_consistency_processors(model.transformer):
                    return model(self.x, self.text, self.t, self.added, self.mask,
                                 cross_attention_kwargs={"story_consistency": ctx}).sample
        else:
            subject = self.subject(variant)
            fn = lambda: model(self.x, self.text, self.t, self.added, self.mask, subject=subject).sample  # noqa: E731
        return torch.no_grad()(fn)


def analytic_flops(conf, batch: int, tokens: int, text: int, slot_lengths=(), group_lengths=(), captions: int = 0,
                   subject_images: int = 0) -> float:
    """Matmul + attention FLOPs of one forward (2 per multiply-add). Global block per token: q,k,v,o and the
    cross-attention q,o (6 D^2), FF (8 D^2); per image the text keys/values (2 L D^2) and the attention products.
    Subject block per packed token: 3 attentions (4 + 2 + 4 D^2), FF (8 D^2), output (D^2); per distinct caption the
    keys/values; attention within each slot (self, cross) and each group (3D). The subject captions' projection is
    done once per pass, outside the step."""
    d, layers = conf.num_attention_heads * conf.attention_head_dim, conf.num_layers
    c_text, patch = conf.caption_channels, conf.patch_size
    n_tok = batch * tokens
    block = n_tok * 14 * d * d + batch * text * 2 * d * d + batch * (2 * tokens * tokens * d + 2 * tokens * text * d)
    embed = n_tok * patch * patch * conf.in_channels * d + batch * text * (c_text * d + d * d)
    final = n_tok * d * patch * patch * conf.out_channels
    macs = layers * block + embed + final
    if slot_lengths:
        packed = sum(slot_lengths)
        sub = (packed * 19 * d * d + captions * text * 2 * d * d + sum(2 * n * n * d for n in slot_lengths)
               + 2 * packed * text * d + sum(2 * n * n * d for n in group_lengths))
        sub_embed = subject_images * tokens * (patch * patch * conf.in_channels * d
                                               + 9 * conf.in_channels * 9 * patch * patch)
        macs += (layers // 2) * sub + sub_embed
    return 2.0 * macs


def _analytic(case: Case, variant) -> float | None:
    conf = case.model.transformer.config
    tokens = case.grid * case.grid
    if variant == "tf":
        return None
    if variant is None:
        return analytic_flops(conf, case.batch, tokens, TEXT)
    lengths = case.slots(variant).masks.sum(1).tolist()
    return analytic_flops(conf, case.batch, tokens, TEXT, lengths, [sum(lengths)], case.frames, case.batch)


def measure(label: str, case: Case, variant, repeats: int, device, warmup: int = 1,
            timed_counting: bool = False) -> dict:
    """Fastest time (shared CPUs: the least disturbed call), counted FLOPs and allocator peak of one call.
    ``timed_counting``: time the call that counts (full size, where the counter's per-op cost is noise) instead of
    spending one more call on counting."""
    fn = case.forward(variant)
    if timed_counting:
        timing, counted = count_flops(lambda: time_call(fn, repeats=1, warmup=warmup, device=device))
    else:
        timing = time_call(fn, repeats=repeats, warmup=warmup, device=device)
        _, counted = count_flops(fn)
    seconds = timing["min_s"]
    analytic = _analytic(case, variant)
    return {"config": label, "frames": case.frames, "forward_s": seconds,
            "TFLOP": counted / 1e12, "TFLOP_analytic": None if analytic is None else analytic / 1e12,
            "TFLOP/s": counted / 1e12 / seconds,
            "peak_MB": measure_peak_memory(fn, device) / 2**20}


def with_ratios(rows: list[dict]) -> list[dict]:
    base = rows[0]
    for row in rows:
        row["time_ratio"] = ratio(row["forward_s"], base["forward_s"])
        row["mem_ratio"] = ratio(row["peak_MB"], max(base["peak_MB"], 1e-3))
    return rows


def variant_rows(label: str, case: Case, repeats: int, device, how: str, warmup: int = 1,
                 timed_counting: bool = False) -> list[dict]:
    rows = []
    for name, variant, target in VARIANTS:
        row = measure(label, case, variant, repeats, device, warmup, timed_counting)
        rows.append({**row, "variant": name, "how": how, "target": target,
                     "coverage": "-" if variant in (None, "tf") else f"{int(variant * 100)}%"})
    return with_ratios(rows)


def plan_rows(label: str, case: Case, repeats: int, device) -> list[dict]:
    """Per-step cost of the subject path's plan at 25% vs the global branch, and the forward with the plan rebuilt
    per call (today's per-step behaviour without a prebuilt plan) vs built once per pass."""
    slots = case.slots(0.25)
    proj = case.model.transformer.caption_projection

    def plan():
        TokenPacking.build(slots, case.batch)
        with torch.no_grad():
            proj(case.captions)

    plan_s = time_call(plan, repeats=max(repeats, 5), device=device)["min_s"]
    plain_s = time_call(case.forward(None), repeats=repeats, device=device)["min_s"]
    rebuilt = case.model
    per_call = case.subject(0.25, once=False)
    rebuilt_s = time_call(torch.no_grad()(lambda: rebuilt(case.x, case.text, case.t, case.added, case.mask,
                                                          subject=per_call).sample), repeats=repeats,
                          device=device)["min_s"]
    once_s = time_call(case.forward(0.25), repeats=repeats, device=device)["min_s"]
    common = {"config": label, "frames": case.frames, "coverage": "25%"}
    return [
        {**common, "variant": "subject plan per step (packing + caption projection)", "how": "timed",
         "forward_s": plan_s, "time_ratio": ratio(plan_s, plain_s), "target": "<= 0.05x plain"},
        {**common, "variant": "Lay2Story, plan rebuilt every call", "how": "timed", "forward_s": rebuilt_s,
         "time_ratio": ratio(rebuilt_s, plain_s)},
        {**common, "variant": "Lay2Story, plan built once per pass", "how": "timed", "forward_s": once_s,
         "time_ratio": ratio(once_s, plain_s)},
    ]


def medium_rows(args, device) -> list[dict]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    label = f"medium{'-quick' if args.quick else ''} 256px"
    model = build({**MEDIUM, "num_layers": 4 if args.quick else 8}, 32, device, dtype)
    repeats = 2 if args.quick else 5
    rows = []
    for frames in ([4] if args.quick else [4, 8]):
        rows += variant_rows(label, Case(model, frames, 32, cfg=False, device=device, dtype=dtype), repeats, device,
                             "measured")
    return rows + plan_rows(label, Case(model, 4, 32, cfg=False, device=device, dtype=dtype), repeats, device)


def compile_rows(args, device) -> list[dict]:
    """``torch.compile`` of the global blocks (static) and subject blocks (dynamic token counts, bucketed segment
    lengths): eager vs compiled seconds per model call (4 frames + CFG, the fastest of ``repeats``), the first call's
    compile time, and the graphs compiled by each next story (coverage 25%, then 22%, 30%, 100%)."""
    from lay2story_core.attention.compiled import compile_blocks

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    label = f"medium{'-quick' if args.quick else ''} 256px, compiled"
    model = build({**MEDIUM, "num_layers": 4 if args.quick else 8}, 32, device, dtype)
    case = Case(model, 4, 32, cfg=True, device=device, dtype=dtype)
    repeats = 2 if args.quick else 5

    def story(coverage):
        subject = case.subject(coverage, once=False)
        subject.packing = TokenPacking.build(subject.slots, case.batch, bucket=True)
        with torch.no_grad():
            subject.caption_states = model.transformer.caption_projection(case.captions)
        return torch.no_grad()(lambda: model(case.x, case.text, case.t, case.added, case.mask,
                                             subject=subject).sample)

    eager = {cov: time_call(story(cov), repeats=repeats, device=device)["min_s"] for cov in (0.25,)}
    eager_plain = time_call(case.forward(None), repeats=repeats, device=device)["min_s"]
    stats = compile_blocks(model.transformer, model.subject_branch)
    rows = []
    for name, fn, base in (("plain PixArt", case.forward(None), eager_plain),
                           ("Lay2Story 25%", story(0.25), eager[0.25])):
        before = stats.graphs
        first = time_call(fn, repeats=1, warmup=0, device=device)["min_s"]
        compiled = time_call(fn, repeats=repeats, warmup=0, device=device)["min_s"]
        rows.append({"config": label, "frames": 4, "variant": name, "how": "first call (compiles)",
                     "forward_s": first, "graphs": stats.graphs - before})
        rows.append({"config": label, "frames": 4, "variant": name, "how": "compiled", "forward_s": compiled,
                     "time_ratio": ratio(compiled, base), "target": "< 1 to pay"})
        rows.append({"config": label, "frames": 4, "variant": name, "how": "eager", "forward_s": base,
                     "time_ratio": 1.0})
    for coverage in (0.22, 0.30, 1.0):
        before = stats.graphs
        seconds = time_call(story(coverage), repeats=1, warmup=0, device=device)["min_s"]
        rows.append({"config": label, "frames": 4, "variant": f"next story, coverage {int(coverage * 100)}%",
                     "how": "first call", "forward_s": seconds, "graphs": stats.graphs - before,
                     "target": "0 in a seen bucket, <= 1 in a new one"})
    return rows


def run(args) -> dict:
    device = prepare(args)
    rows: list[dict] = []
    if not args.no_medium:
        rows += medium_rows(args, device)
    if args.compile:
        rows += compile_rows(args, device)
    extra: dict = {}
    if args.full_size or (device.type == "cuda" and not args.quick):
        from bench.full_size import full_size_rows, gpu_memory_rows, weight_rows

        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
        sizes = [int(s) for s in args.sizes.split(",") if s]
        forward_sizes = {int(s) for s in args.full_forward.split(",") if s}
        full, extra = full_size_rows(sizes, forward_sizes, device, dtype, args.frames)
        rows += full
        extra["weights"] = weight_rows()
        extra["gpu_memory_prediction"] = gpu_memory_rows(extra)
    return {"title": f"Forward: plain PixArt vs Lay2StoryTransformer ({device})", "columns": COLUMNS,
            "rows": rows, **extra,
            "notes": ["time_ratio and mem_ratio are against plain PixArt measured in the same run (same config)",
                      "TFLOP counted by torch.utils.flop_counter (CPU flash SDPA included); peak_MB from allocator "
                      "events (CPU: profiler; CUDA: max_memory_allocated)",
                      "how: measured = the whole forward; composed = 28 global + 14 subject blocks + embed/final, "
                      "each block measured"]}


def main(argv=None) -> dict:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="also PixArt-XL (default on CUDA)")
    parser.add_argument("--sizes", default="512", help="full-size resolutions (px) to time, comma separated")
    parser.add_argument("--full-forward", default="512", help="sizes whose whole step is also run end to end")
    parser.add_argument("--frames", type=int, default=4, help="frames of the full-size story (CFG doubles)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile at the medium config (slow)")
    parser.add_argument("--no-medium", action="store_true", help="skip the medium CPU config")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="full-size dtype")
    payload = run_and_report(run, parser, argv)
    for key, title in (("meta", "One model call, 4 frames + CFG: peak memory and FLOPs replayed on the meta device"),
                       ("layout_off_breakdown", "Where a block's time goes (self CPU time per kind of op)"),
                       ("weights", "Weights per component (bf16)"),
                       ("gpu_memory_prediction", "Predicted GPU memory at 1024 px, T5 offloaded (GB, allocator)")):
        if payload.get(key):
            print(f"\n## {title}\n\n{format_table(payload[key], list(payload[key][0]))}")
    return payload


if __name__ == "__main__":
    main()
