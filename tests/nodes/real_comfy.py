"""Boot the real ComfyUI in this process (for the check scripts the real-host tests run as subprocesses).

    from real_comfy import boot, tiny_t5_clip, tiny_taesd_vae
    pack = boot(comfy_dir)   # ComfyUI's ``comfy`` importable on the CPU; the pack imported as ``lay2story_pack``
    clip, hf_t5 = tiny_t5_clip(seed=2)  # ComfyUI's PixArt CLIP over a tiny T5 (after ``boot``: imports ``comfy``)
    vae = tiny_taesd_vae(seed=3)        # ComfyUI's VAE, TAESD layout

The pack is imported under its own package name (as ComfyUI's loader does, with a folder name), so ComfyUI's
top-level ``nodes`` module and the pack's ``nodes`` package never clash; ``lay2story_core`` resolves to this checkout.
A check script prints one JSON line (``emit``) that its pytest module reads (``conftest.run_real_check``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the tiny T5 text encoder's config (ComfyUI's T5 and transformers' T5EncoderModel): 12 wide, two layers
TINY_T5 = {"d_ff": 24, "d_kv": 4, "d_model": 12, "num_heads": 3, "num_layers": 2, "vocab_size": 32128,
           "relative_attention_num_buckets": 32, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
           "layer_norm_epsilon": 1e-6, "model_type": "t5"}


def boot(comfy_dir: str):
    """Real ComfyUI on the CPU + the pack as ``lay2story_pack``; returns the pack module."""
    sys.path[:0] = [comfy_dir, os.path.join(ROOT, "tests")]
    sys.path.append(ROOT)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (device chosen now, on the CPU)

    if "lay2story_pack" in sys.modules:
        return sys.modules["lay2story_pack"]
    spec = importlib.util.spec_from_file_location("lay2story_pack", os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lay2story_pack"] = module
    spec.loader.exec_module(module)
    return module


def randomize(module, seed: int) -> None:
    """Seeded small random weights from a ``torch.Generator`` (ComfyUI's ops leave them uninitialised; the global
    RNG is not drawn from); norm scales near 1."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "position_ids" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.02 if p.ndim >= 2 else 0.01)
                        + (1.0 if p.ndim == 1 and "weight" in name else 0.0))


def tiny_t5_clip(seed: int = 2, weights: str = "transformers", model_options: dict | None = None):
    """``comfy.sd.CLIP`` as ComfyUI builds PixArt's: its (unpadded) PixArt T5 tokenizer over a tiny ComfyUI T5
    (``TINY_T5``). Returns ``(clip, hf_t5)``; ``boot`` must have run.

    ``weights="transformers"``: ``torch.manual_seed(seed)``, then a transformers ``T5EncoderModel`` of the same config
    (``hf_t5``, eval mode: the diffusers side of a comparison) whose weights the CLIP loads.
    ``weights="random"``: ``randomize(clip.cond_stage_model, seed)``, ``hf_t5`` None.
    ``model_options`` go to ``comfy.sd.CLIP`` (without a ``dtype`` there ComfyUI's CPU text encoder is float16).
    """
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.pixart_t5 as pixart_t5
    import comfy.text_encoders.t5
    import torch

    class TinyT5(pixart_t5.T5XXLModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options=None):
            comfy.sd1_clip.SDClipModel.__init__(
                self, device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=dict(TINY_T5),
                dtype=dtype, special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                model_options={**(model_options or {}), "model_name": "t5xxl"})

    class TinyPixArtTE(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            super().__init__(device=device, dtype=dtype, name="t5xxl", clip_model=TinyT5,
                             model_options=model_options or {})

    hf_t5 = None
    if weights == "transformers":
        from transformers import T5Config, T5EncoderModel

        torch.manual_seed(seed)
        hf_t5 = T5EncoderModel(T5Config(**{k: v for k, v in TINY_T5.items() if k != "model_type"},
                                        feed_forward_proj="gated-gelu")).eval()
    elif weights != "random":
        raise ValueError(f"weights: 'transformers' or 'random', not {weights!r}")
    clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(pixart_t5.PixArtTokenizer, TinyPixArtTE),
                         model_options=model_options or {})
    if hf_t5 is not None:
        clip.load_sd(hf_t5.state_dict())
    else:
        randomize(clip.cond_stage_model, seed)
    return clip, hf_t5


def tiny_taesd_vae(seed: int = 3):
    """``comfy.sd.VAE`` over a TAESD (ComfyUI's ``comfy.taesd.taesd.TAESD``) with seeded weights: ComfyUI's layers
    skip initialisation (uninitialised memory can be NaN), so every conv is reset after ``torch.manual_seed(seed)``."""
    import comfy.sd
    import comfy.taesd.taesd
    import torch

    torch.manual_seed(seed)
    taesd = comfy.taesd.taesd.TAESD()
    for module in taesd.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.Conv2d.reset_parameters(module)
    return comfy.sd.VAE(sd={f"{part}.{k}": v for part in ("taesd_encoder", "taesd_decoder")
                            for k, v in getattr(taesd, part).state_dict().items()})


def emit(figures: dict) -> None:
    """The script's result: one JSON line on stdout (the last line is what the test reads)."""
    sys.stdout.flush()
    print(json.dumps(figures), flush=True)
