"""Full-size figures for ``bench/model.py --full-size``: per-block measurements, a composed denoising step, weights
per component and the predicted GPU memory of whole stories (not a script of its own).

One denoising step of PixArt-XL at 1024 px is ~5 minutes on one CPU core even in bf16, so each block kind is
measured once (time, counted FLOPs, allocator peak) and the step is composed: 28 global blocks, 14 subject blocks,
and the rest of the forward (patch/caption embedding, subject input, final layer), itself measured by running the
model with its block lists emptied. Where the whole step is also run end to end (``--full-forward``), the composed
and the measured figures sit in the same table.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
from diffusers import AutoencoderKL
from torch import nn
from transformers import T5Config, T5EncoderModel

from bench.common import count_flops, measure_peak_memory, profile_call, time_call
from lay2story_core.consistency import story_consistency_processors

STEPS, SUBJECT_LAYERS, GLOBAL_LAYERS = 25, 14, 28
MB = 2**20


def _block_inputs(case):
    model, pixart = case.model, case.model.transformer
    with torch.no_grad():
        hidden = pixart.pos_embed(case.x)
        temb, _ = pixart.adaln_single(case.t, case.added, batch_size=case.batch, hidden_dtype=case.dtype)
        text = pixart.caption_projection(case.text).view(case.batch, -1, hidden.shape[-1])
    bias = ((1 - case.mask.to(case.dtype)) * -10000.0)[:, None]
    return model, pixart, hidden, temb, text, bias


def _timed(fn, device) -> dict:
    """One timed call under the flop counter (no warm-up: at these sizes a CPU call has no first-call cost worth
    its minutes) and one call under the allocator profiler."""
    (timing, flops) = count_flops(lambda: time_call(fn, repeats=1, warmup=0, device=device))
    out = {"s": timing["median_s"], "flops": flops}
    if torch.device(device).type == "cpu":  # one profiled call: the allocator peak and where the time went
        peak, kinds = profile_call(fn)
        out["peak"] = peak if peak is not None else measure_peak_memory(fn, device)
        out["time_by_op_s"] = kinds
    else:
        out["peak"] = measure_peak_memory(fn, device)
    return out


@contextlib.contextmanager
def _no_blocks(model):
    """The model without its block lists: what is left is the embed / subject input / final layer."""
    pixart, branch = model.transformer, model.subject_branch
    kept = pixart.transformer_blocks, branch.blocks
    pixart.transformer_blocks, branch.blocks = nn.ModuleList(), nn.ModuleList()
    try:
        yield
    finally:
        pixart.transformer_blocks, branch.blocks = kept


def block_figures(case, device, general_path: bool = False) -> dict:
    """Time / FLOPs / allocator peak of one global block, one training-free global block of each half (regional
    captions only / also consistent self-attention), one subject block at 25% and 100%, and of the rest of the
    forward per variant. ``general_path``: also the layout-off block through the general gather/pad path (what
    every layout ran before the view fast paths)."""
    model, pixart, hidden, temb, text, bias = _block_inputs(case)
    out = {}
    block = pixart.transformer_blocks[GLOBAL_LAYERS - 1]
    kwargs = dict(encoder_hidden_states=text, encoder_attention_mask=bias, timestep=temb)
    out["global"] = _timed(torch.no_grad()(lambda: block(hidden, **kwargs)), device)
    ctx = {"story_consistency": case.consistency()}
    with story_consistency_processors(pixart):  # regional captions in every block, consistent attention in the
        first = pixart.transformer_blocks[0]    # second half (the active blocks)
        out["global_regional"] = _timed(torch.no_grad()(lambda: first(hidden, cross_attention_kwargs=ctx, **kwargs)),
                                        device)
        out["global_tf"] = _timed(torch.no_grad()(lambda: block(hidden, cross_attention_kwargs=ctx, **kwargs)), device)
    branch = model.subject_branch
    for coverage in (0.25, 1.0):
        subject = case.subject(coverage)
        packing = subject.packing
        with torch.no_grad():
            x = packing.gather(branch.embed(_subject_input(case, subject)))
            temb_tok = temb.index_select(0, packing.token_image)
        valid = subject.caption_mask.bool()
        call = (x, temb_tok, subject.caption_states, valid, packing)
        out[f"subject_{coverage}"] = _timed(torch.no_grad()(lambda args=call: branch.block_forward(0, *args)), device)
        out[f"subject_{coverage}"]["tokens"] = packing.num_tokens
        if coverage == 1.0 and general_path:  # the same block without the view fast paths (gathers, pad copies)
            slow = replace(packing, prefix=False, slot_segments=replace(packing.slot_segments, identity=False),
                           group_segments=replace(packing.group_segments, identity=False))
            call = (x, temb_tok, subject.caption_states, valid, slow)
            out["subject_1.0_general"] = _timed(torch.no_grad()(
                lambda args=call: branch.block_forward(0, *args)), device)
    with _no_blocks(model):
        for key, variant in (("rest_plain", None), ("rest_0.25", 0.25), ("rest_1.0", 1.0), ("rest_tf", "tf")):
            out[key] = _timed(case.forward(variant), device)
    return out


def _subject_input(case, subject):
    from lay2story_core.models.lay2story_transformer import subject_branch_input

    return subject_branch_input(case.x, subject, case.added)[0]


def composed(figures: dict, case, variant) -> dict:
    """One step from its blocks; memory = the live inputs of the block phase (hidden states, caption states, the
    subject branch's 14 residuals and packed state) + the largest block transient."""
    d = case.model.transformer.inner_dim
    size = torch.finfo(case.dtype).bits // 8
    tokens = case.grid * case.grid
    live = (case.batch * tokens * d + case.batch * case.text.shape[1] * d + case.batch * 7 * d) * size
    g = figures["global"]
    if variant is None:
        parts, rest = [(g, GLOBAL_LAYERS)], figures["rest_plain"]
    elif variant == "tf":
        parts = [(figures["global_regional"], GLOBAL_LAYERS // 2), (figures["global_tf"], GLOBAL_LAYERS // 2)]
        rest = figures["rest_tf"]
    else:
        s = figures[f"subject_{variant}"]
        parts, rest = [(g, GLOBAL_LAYERS), (s, SUBJECT_LAYERS)], figures[f"rest_{variant}"]
        live += (SUBJECT_LAYERS + 1) * s["tokens"] * d * size + s["tokens"] * 6 * d * size
    seconds = rest["s"] + sum(p["s"] * n for p, n in parts)
    flops = rest["flops"] + sum(p["flops"] * n for p, n in parts)
    peak = max(rest["peak"], live + max(p["peak"] for p, _ in parts))
    return {"forward_s": seconds, "TFLOP": flops / 1e12, "TFLOP/s": flops / 1e12 / seconds, "peak_MB": peak / MB}


def vae_decode_peak(device, dtype) -> dict:  # a real decode (minutes on CPU); the tables use the meta replay
    """Allocator peak and time of decoding one 1024 px frame with PixArt's VAE (sd-vae-ft-ema shape)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4).to(device, dtype).eval()
    latent = torch.randn(1, 4, 128, 128).to(device, dtype)
    fn = torch.no_grad()(lambda: vae.decode(latent).sample)
    seconds = time_call(fn, repeats=1, warmup=0, device=device)["median_s"]
    return {"s": seconds, "peak_MB": measure_peak_memory(fn, device) / MB}


def full_size_rows(sizes, forward_sizes, device, dtype, frames: int) -> tuple[list[dict], dict]:
    """Timed rows (blocks measured, step composed; whole forwards for ``forward_sizes``) for every size in ``sizes``,
    and, for 512 and 1024 px at 4 and 8 frames, the meta-device replay of every variant's peak memory and FLOPs."""
    from bench.model import XL, Case, build, variant_rows, with_ratios

    rows, extra = [], {"blocks": {}, "composed": {}}
    extra["meta"] = meta_rows(512, (4, 8), dtype) + meta_rows(1024, (4, 8), dtype)
    extra["vae_decode_1024_GB"] = meta_vae_decode_peak(dtype)
    names = {None: "plain PixArt", 0.25: "Lay2Story layout on", 1.0: "Lay2Story layout off", "tf": "training-free"}
    for px in sizes:
        latent = px // 8
        label = f"PixArt-XL {px}px {str(dtype).split('.')[-1]} CFG"
        model = build(XL, latent, device, dtype, ms=px == 1024)
        case = Case(model, frames, latent, cfg=True, device=device, dtype=dtype)
        figures = block_figures(case, device, general_path=px <= 512)
        extra["blocks"][px] = figures
        comp = []
        for variant, name in names.items():
            row = {"config": label, "frames": frames, "variant": name, "how": "composed",
                   "coverage": "-" if variant in (None, "tf") else f"{int(variant * 100)}%",
                   "TFLOP_analytic": _analytic_or_none(case, variant), **composed(figures, case, variant)}
            comp.append(row)
        rows += with_ratios(comp)
        extra["composed"][px] = comp
        if px in forward_sizes:
            rows += variant_rows(label, case, 1, device, "measured", warmup=0, timed_counting=True)
        del model, case
    extra["layout_off_breakdown"] = breakdown_rows(extra["blocks"])
    return rows, extra


def breakdown_rows(blocks: dict) -> list[dict]:
    """Where the time of one global block and one subject block goes (self time per kind of op), with FLOPs."""
    rows = []
    for px, figures in blocks.items():
        base = figures["global"]
        for key, name in (("global", "global block (8 images)"), ("subject_1.0", "subject block, layout off"),
                          ("subject_1.0_general", "subject block, layout off, general gather/pad path"),
                          ("subject_0.25", "subject block, layout on 25%")):
            if key not in figures:
                continue
            fig = figures[key]
            row = {"size": f"{px}px", "block": name, "seconds": fig["s"], "x_global_time": fig["s"] / base["s"],
                   "TFLOP": fig["flops"] / 1e12, "x_global_flops": fig["flops"] / base["flops"]}
            kinds = fig.get("time_by_op_s") or {}
            total = sum(kinds.values()) or 1.0
            row.update({f"{kind}_%": 100 * value / total for kind, value in kinds.items()})
            rows.append(row)
    return rows


def _analytic_or_none(case, variant):
    from bench.model import _analytic

    value = _analytic(case, variant)
    return None if value is None else value / 1e12


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weight_rows() -> list[dict]:
    """bf16 weight memory per component of a PixArt-XL-2-1024-MS story pipeline (built on the meta device)."""
    from diffusers import PixArtTransformer2DModel

    from bench.model import XL
    from lay2story_core.models import SubjectBranch

    with torch.device("meta"):
        pixart = PixArtTransformer2DModel(**XL, sample_size=128, use_additional_conditions=True)
        branch = SubjectBranch.from_transformer(pixart)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                     num_heads=64, feed_forward_proj="gated-gelu"))
    rows = []
    for name, module in (("PixArt-XL-2 transformer", pixart), ("subject branch (14 blocks)", branch),
                         ("VAE", vae), ("T5-v1.1-XXL encoder (offloaded)", t5)):
        count = _params(module)
        rows.append({"component": name, "params_M": count / 1e6, "bf16_GB": count * 2 / 1e9})
    return rows


def gpu_memory_rows(extra: dict) -> list[dict]:
    """Predicted GPU memory (allocator, GB) of 4 / 8 / 32-frame stories at 1024 px with T5 offloaded.

    weights (transformer + branch + VAE, bf16) + max(the model call's peak, one frame's VAE decode). The call's
    peak is replayed on the meta device at 4 and 8 frames (both CFG halves in one batch); 32 frames run in chunks
    of 4 after 4 identity frames, so their call is the 4-frame one, plus the identity bank (keys and values of the
    identity frames' subject tokens for every step and subject layer) when it stays on the GPU
    (``bank_device="cpu"`` keeps it off).
    """
    meta = {(r["variant"], r["frames"]): r["peak_GB"] for r in extra.get("meta", []) if r["size"] == "1024px"}
    if not meta:
        return []
    weights = sum(r["bf16_GB"] for r in extra["weights"] if "offloaded" not in r["component"])
    decode = extra["vae_decode_1024_GB"]
    rows = []
    for name in dict.fromkeys(v for v, _ in meta):
        coverage = 1.0 if "off" in name else 0.25
        for frames, paper in ((4, 29.7), (8, None), (32, 62.1)):
            chunked = frames > 8
            call = meta[(name, 4 if chunked else frames)]
            bank = 0.0
            if chunked and name.startswith("Lay2Story"):
                identity_tokens = 4 * coverage * 4096
                bank = STEPS * SUBJECT_LAYERS * identity_tokens * 1152 * 2 * 2 / 1e9  # k and v, bf16
            total = weights + max(call, decode)
            rows.append({"variant": name, "frames": frames, "chunk": 4 if chunked else frames,
                         "weights_GB": weights, "call_peak_GB": call, "vae_decode_GB": decode, "bank_GB": bank,
                         "GB_bank_on_CPU": total, "GB_bank_on_GPU": total + bank, "paper_GB": paper,
                         "target": "<= 12" if frames == 4 else ("<= 20" if frames == 32 else "-")})
    return rows


def table_of(rows: list[dict]) -> str:
    from bench.common import format_table

    return format_table(rows, list(rows[0])) if rows else ""



def _to_device(obj, device):
    """A (nested) frozen dataclass of tensors, every tensor moved to ``device``."""
    from dataclasses import fields, is_dataclass

    changes = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, torch.Tensor):
            changes[f.name] = value.to(device)
        elif is_dataclass(value):
            changes[f.name] = _to_device(value, device)
    return replace(obj, **changes)


def meta_model(px: int, dtype, config=None):
    """The full-size model on the meta device (no memory, no init cost)."""
    from bench.model import XL, build

    with torch.device("meta"):
        return build(config or XL, px // 8, "meta", dtype, ms=px == 1024)


def meta_case(model, frames: int, px: int, dtype):
    """A :class:`bench.model.Case` on the meta device whose packings are planned on the CPU (they need the masks'
    values) and then moved."""
    from bench.model import Case, box_masks

    class MetaCase(Case):
        def slots(self, coverage):
            from lay2story_core.attention import SubjectSlots

            return SubjectSlots.one_per_image(box_masks(self.frames, self.grid, coverage, "cpu"))

        def subject(self, coverage, once=True):
            from lay2story_core.attention import TokenPacking

            inputs = super().subject(coverage, once=False)
            inputs.packing = _to_device(TokenPacking.build(inputs.slots, self.batch), "meta")
            with torch.no_grad():
                inputs.caption_states = self.model.transformer.caption_projection(self.captions)
            return inputs

    case = MetaCase.__new__(MetaCase)
    Case.__init__(case, model, frames, px // 8, cfg=True, device=torch.device("meta"), dtype=dtype)
    return case


def meta_rows(px: int, frame_counts, dtype) -> list[dict]:
    """Peak memory and FLOPs of one model call per variant, replayed on the meta device (``meta_replay``)."""
    from bench.common import meta_replay
    from bench.model import VARIANTS

    model = meta_model(px, dtype)
    rows = []
    for frames in frame_counts:
        case = meta_case(model, frames, px, dtype)
        for name, variant, _ in VARIANTS:
            if variant == "tf":
                continue  # its token sampling needs values
            peak, flops = meta_replay(case.forward(variant))
            rows.append({"size": f"{px}px", "frames": frames, "variant": name, "peak_GB": peak / 1e9,
                         "TFLOP": flops / 1e12})
    return rows


def meta_vae_decode_peak(dtype) -> float:
    from bench.common import meta_replay

    with torch.device("meta"):
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4).to(dtype).eval()
        latent = torch.empty(1, 4, 128, 128, dtype=dtype)
    peak, _ = meta_replay(torch.no_grad()(lambda: vae.decode(latent).sample))
    return peak / 1e9
