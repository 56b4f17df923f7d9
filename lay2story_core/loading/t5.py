"""Load a T5 encoder (``transformers.T5EncoderModel``) from a folder or a single file.

Single files are what ComfyUI users keep in ``models/text_encoders`` (``t5xxl_fp16.safetensors``: transformers key
names ``encoder.block.N.layer...``, ``shared.weight``, sometimes ``encoder.embed_tokens.weight``, sometimes under a
prefix such as ``text_encoders.t5xxl.transformer.``), including ComfyUI's fp8 files: plain ``float8_e4m3fn`` weights
and ``*_scaled`` ones (a ``scaled_fp8`` marker and a per-layer ``scale_weight``), which are dequantised on load as
ComfyUI does (``weight.float() * scale_weight``). Full T5 checkpoints (with a decoder) lose their decoder.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch

from .errors import ModelLoadError, UnsupportedFormatError, WrongArchitectureError
from .folder import load_folder_strict
from .modeling import empty_model, infer_config, load_strict, resolve_dtype
from .sniff import describe_architecture, sniff_architecture
from .sources import from_hub_repo, resolve_source
from .state_dict import cast_state_dict, find_prefix, preview_keys, read_state_dict, select_prefix

__all__ = ["infer_t5_config", "load_t5_encoder", "transformers_dtype_kwargs"]

logger = logging.getLogger(__name__)

try:  # transformers >= 5 validates config fields with huggingface_hub's strict dataclasses
    from huggingface_hub.errors import StrictDataclassError as _CONFIG_ERRORS
except ImportError:  # pragma: no cover - older huggingface_hub
    _CONFIG_ERRORS = TypeError

_ANCHOR = "encoder.block.0.layer.0.SelfAttention.q.weight"
_DROPPED_PREFIXES = ("decoder.", "lm_head.")
_DROPPED_KEYS = ("scaled_fp8", "spiece_model")
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_INPUT_SCALE_SUFFIXES = (".scale_input", ".input_scale")


def transformers_dtype_kwargs(dtype: torch.dtype) -> dict:
    """``{"dtype": ...}`` for transformers >= 4.56 (``torch_dtype`` is deprecated there), else ``torch_dtype``."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def infer_t5_config(state_dict: dict[str, torch.Tensor], source: str = "state dict"):
    """A ``T5Config`` from encoder tensor shapes (transformers key names, prefix removed).

    Shapes give vocab size and d_model (``shared``), depth (``encoder.block.N``), heads and buckets
    (``relative_attention_bias``: buckets x heads), d_kv (q rows / heads), d_ff, and the feed-forward kind:
    ``wi_0``/``wi_1`` -> gated-gelu (T5 v1.1, Flan-T5, T5-XXL of PixArt/SD3/Flux), ``wi`` -> relu (original T5).
    ``relative_attention_max_distance`` (128) and ``layer_norm_epsilon`` (1e-6) are T5's fixed values.
    """
    from transformers import T5Config

    emb = state_dict.get("shared.weight", state_dict.get("encoder.embed_tokens.weight"))
    if emb is None:
        raise ModelLoadError(source, "has no token embedding (shared.weight or encoder.embed_tokens.weight)")
    depth = 1 + max(
        (int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.block\.(\d+)\.", k))), default=-1
    )
    attn = "encoder.block.0.layer.0.SelfAttention."
    bias = state_dict.get(attn + "relative_attention_bias.weight")
    if depth == 0 or bias is None:
        raise ModelLoadError(source, "has no encoder blocks with a relative attention bias")
    if "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in state_dict:
        raise UnsupportedFormatError(source, "has a position bias in every block: that is UMT5, not T5")
    buckets, heads = (int(s) for s in bias.shape)
    inner = int(state_dict[attn + "q.weight"].shape[0])
    if inner % heads:
        raise ModelLoadError(source, f"q projection has {inner} rows, not a multiple of {heads} heads")
    ff = "encoder.block.0.layer.1.DenseReluDense."
    gated = ff + "wi_0.weight" in state_dict
    wi = state_dict.get(ff + ("wi_0.weight" if gated else "wi.weight"))
    if wi is None:
        raise ModelLoadError(source, f"has no feed-forward input projection ({ff}wi_0.weight or {ff}wi.weight)")
    return T5Config(
        vocab_size=int(emb.shape[0]),
        d_model=int(emb.shape[1]),
        d_kv=inner // heads,
        d_ff=int(wi.shape[0]),
        num_layers=depth,
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=False,
        is_encoder_decoder=False,
        use_cache=False,
    )


def load_t5_encoder(
    path_or_id: str | os.PathLike,
    *,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    subfolder: str | None = None,
):
    """Load a ``T5EncoderModel`` in eval mode.

    Args:
        path_or_id: single file (``.safetensors``, ``.pth``/``.bin``), a transformers ``text_encoder/`` folder, a
            pipeline folder (uses ``text_encoder/``) or a hub id.
        torch_dtype: dtype of the returned model (default float32). With float16 the ``wo`` projections stay
            float32, as transformers does for T5 (they overflow in half precision).
        device: where to put it (default CPU).
        subfolder: component folder inside a pipeline folder / hub repo (default ``"text_encoder"``).
    """
    from transformers import T5EncoderModel

    dtype = resolve_dtype(torch_dtype)
    source = resolve_source(path_or_id, "text_encoder", subfolder)
    if source.kind == "file":
        model = _load_single_file(Path(source.path), dtype, device)
    elif source.kind == "folder":
        _check_folder_config(Path(source.path))
        model = _load_folder(Path(source.path), dtype, device)
    else:
        model = from_hub_repo(
            source,
            "text_encoder",
            "T5 encoder",
            lambda sub: T5EncoderModel.from_pretrained(
                source.path, subfolder=sub or "", **transformers_dtype_kwargs(dtype)
            ),
        )
    if device is not None:
        model.to(device)
    return model.eval()


def _check_folder_config(folder: Path) -> None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(folder / "config.json", f"unreadable config ({err})") from err
    if config.get("model_type") != "t5":
        kind = config.get("model_type") or config.get("_class_name") or "unknown model"
        raise WrongArchitectureError(folder, f"config.json describes a {kind}, not a T5 encoder")


def _load_folder(folder: Path, dtype: torch.dtype, device):
    """A transformers T5 folder, checked strictly (see :mod:`.folder`): the decoder of a full T5 is dropped, the
    tied token embedding (often stored once) is given both of its names."""
    from transformers import T5Config, T5EncoderModel

    try:
        config = T5Config.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, _CONFIG_ERRORS) as err:
        raise ModelLoadError(folder / "config.json", f"unreadable T5 config ({type(err).__name__}: {err})") from err
    config.is_encoder_decoder, config.use_cache = False, False
    keep_fp32 = tuple(T5EncoderModel._keep_in_fp32_modules or ()) if dtype == torch.float16 else ()

    def rename(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sd = {k: v for k, v in sd.items() if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED_KEYS}
        embedding = sd.get("shared.weight", sd.get("encoder.embed_tokens.weight"))
        if embedding is not None:
            sd["shared.weight"] = sd["encoder.embed_tokens.weight"] = embedding  # tied in T5EncoderModel
        return sd

    model = load_folder_strict(lambda: T5EncoderModel(config), folder, what="T5 encoder", dtype=dtype, device=device,
                               rename=rename, keep_fp32=keep_fp32)
    model.encoder.embed_tokens.weight = model.shared.weight
    return model


def _load_single_file(path: Path, dtype: torch.dtype, device):
    from transformers import T5EncoderModel

    raw = read_state_dict(path)
    prefix = find_prefix(raw, (_ANCHOR,))
    if prefix is None:
        raise WrongArchitectureError(
            path, f"looks like {describe_architecture(sniff_architecture(raw))}, not a T5 encoder"
        )
    sd = select_prefix(raw, prefix)
    del raw
    if prefix:
        logger.info("%s: using the keys under %r", path, prefix)
    dropped = [k for k in sd if k.startswith(_DROPPED_PREFIXES) or k in _DROPPED_KEYS]
    for key in dropped:
        del sd[key]
    if dropped:
        logger.info("%s: ignoring %d non-encoder keys (%s)", path, len(dropped), preview_keys(dropped, 3))
    _dequantize_fp8(sd, path)
    config = infer_config(lambda: infer_t5_config(sd, str(path)), source=str(path), what="T5 encoder")

    keep_fp32 = tuple(T5EncoderModel._keep_in_fp32_modules or ()) if dtype == torch.float16 else ()
    cast_state_dict(sd, dtype, keep_fp32)
    embedding = sd.get("shared.weight", sd.get("encoder.embed_tokens.weight"))
    sd["shared.weight"] = sd["encoder.embed_tokens.weight"] = embedding  # tied in T5EncoderModel
    model = empty_model(lambda: T5EncoderModel(config), source=str(path), what="T5 encoder")
    model = load_strict(
        model, sd, source=str(path), what="T5 encoder", dtype=dtype, device=device, keep_fp32=keep_fp32
    )
    model.encoder.embed_tokens.weight = model.shared.weight
    logger.info(
        "%s: loaded T5 encoder d_model=%d layers=%d heads=%d",
        path,
        config.d_model,
        config.num_layers,
        config.num_heads,
    )
    return model


def _dequantize_fp8(sd: dict[str, torch.Tensor], path: Path) -> None:
    """ComfyUI fp8: ``w = weight.float() * scale_weight`` (scalar or per output row); input scales are unused here."""
    for key in [k for k in sd if k.endswith(_INPUT_SCALE_SUFFIXES)]:
        del sd[key]
    for key in [k for k in sd if k.endswith(_SCALE_SUFFIXES)]:
        scale = sd.pop(key).to(torch.float32)
        weight_key = key.rsplit(".", 1)[0] + ".weight"
        if weight_key not in sd:
            raise ModelLoadError(path, f"fp8 scale {key!r} has no weight {weight_key!r}")
        weight = sd[weight_key].to(torch.float32)
        if scale.numel() == 1:
            sd[weight_key] = weight * scale.reshape(())
        elif scale.numel() == weight.shape[0]:
            sd[weight_key] = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        else:
            raise UnsupportedFormatError(
                path, f"fp8 scale {key!r} has shape {tuple(scale.shape)} (block-wise scaling is not supported)"
            )
