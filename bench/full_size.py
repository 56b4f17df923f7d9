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

import torch
from diffusers import AutoencoderKL
from torch import nn
from transformers import T5Config, T5EncoderModel

from bench.common import count_flops, measure_peak_memory, time_call
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
    return {"s": timing["median_s"], "flops": flops, "peak": measure_peak_memory(fn, device)}


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


def block_figures(case, device) -> dict:
    """Time / FLOPs / allocator peak of one global block, one training-free global block of each half (regional
    captions only / also consistent self-attention), one subject block at 25% and 100%, and of the rest of the
    forward per variant."""
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


def vae_decode_peak(device, dtype) -> dict:
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
    from bench.model import XL, Case, build, variant_rows, with_ratios

    rows, extra = [], {"blocks": {}, "composed": {}}
    names = {None: "plain PixArt", 0.25: "Lay2Story layout on", 1.0: "Lay2Story layout off", "tf": "training-free"}
    for px in sizes:
        latent = px // 8
        label = f"PixArt-XL {px}px {str(dtype).split('.')[-1]} CFG"
        model = build(XL, latent, device, dtype, ms=px == 1024)
        case = Case(model, frames, latent, cfg=True, device=device, dtype=dtype)
        figures = block_figures(case, device)
        extra["blocks"][px] = {k: {kk: vv for kk, vv in v.items()} for k, v in figures.items()}
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
    if 1024 in sizes:
        extra["vae_decode_1024"] = vae_decode_peak(device, dtype)
    return rows, extra


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
    """Predicted GPU memory (allocator, GB) of 4 / 8 / 32-frame stories at 1024 px, T5 offloaded.

    weights (transformer + branch + VAE, bf16) + max(denoising step peak, one-frame VAE decode). The step peak is
    the composed 4-frame 1024 px figure, scaled linearly in frames (every activation is linear in frames with a
    flash/efficient attention kernel); 32 frames run in chunks of 4 after 4 identity frames, so their step peak
    is the 4-frame one plus the identity bank (keys and values of the identity frames' subject tokens, per step
    and subject layer) when the bank stays on the GPU.
    """
    comp = extra.get("composed", {}).get(1024)
    if not comp:
        return []
    weights = sum(r["bf16_GB"] for r in extra["weights"] if "offloaded" not in r["component"])
    decode = extra["vae_decode_1024"]["peak_MB"] * MB / 1e9
    by_variant = {r["variant"]: r["peak_MB"] * MB / 1e9 for r in comp}
    d = 1152
    rows = []
    for name, step4 in by_variant.items():
        coverage = 1.0 if "off" in name else 0.25
        for frames, paper in ((4, 29.7), (8, None), (32, 62.1)):
            chunked = frames > 8
            step = step4 if chunked else step4 * frames / 4
            bank = 0.0
            if chunked and name.startswith("Lay2Story"):
                identity_tokens = 4 * coverage * 4096
                bank = STEPS * SUBJECT_LAYERS * identity_tokens * d * 2 * 2 / 1e9  # k and v, bf16
            total = weights + max(step, decode)
            row = {"variant": name, "frames": frames, "chunk": 4 if chunked else frames, "weights_GB": weights,
                   "step_peak_GB": step, "vae_decode_GB": decode, "bank_GB": bank,
                   "predicted_GB (bank on CPU)": total, "predicted_GB (bank on GPU)": total + bank,
                   "paper_GB": paper}
            row["target"] = "<= 12" if frames == 4 else ("<= 20" if frames == 32 else "-")
            rows.append(row)
    return rows


def table_of(rows: list[dict]) -> str:
    from bench.common import format_table

    return format_table(rows, list(rows[0])) if rows else ""

