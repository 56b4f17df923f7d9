"""Load a PixArt-alpha / PixArt-Sigma transformer as diffusers' ``PixArtTransformer2DModel``.

Accepted: a diffusers model folder, a diffusers pipeline folder (its ``transformer/``), a hub id, and single files
(``.pth/.pt/.bin`` through ``torch.load(weights_only=True)``, ``.safetensors``) with either the original PixArt key
names or diffusers key names, possibly wrapped (``{"state_dict": ...}``) and prefixed (``module.``, ``model.``).

For single files the config is inferred from tensor shapes (see :func:`infer_pixart_config`). Key conversion is
adapted from diffusers' ``scripts/convert_pixart_alpha_to_diffusers.py`` and ``convert_pixart_sigma_to_diffusers.py``
(Apache-2.0), generalised from a fixed depth of 28 to any depth.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import ModelLoadError, UnsupportedFormatError, WrongArchitectureError
from .folder import load_diffusers_folder
from .modeling import empty_model, infer_config, load_strict, resolve_dtype
from .sniff import describe_architecture, sniff_architecture, sniff_components
from .sources import Source, from_hub_repo, resolve_source
from .state_dict import find_prefix, read_state_dict, select_prefix

__all__ = [
    "PIXART_HEAD_DIM",
    "PixArtCheckpointInfo",
    "convert_pixart_original_to_diffusers",
    "infer_pixart_config",
    "load_pixart_transformer",
    "load_pixart_transformer_with_info",
]

logger = logging.getLogger(__name__)

# Assumption: every released PixArt (alpha XL/2, Sigma XL/2) uses 72-dim heads (1152 = 16 x 72). Shapes cannot tell
# the head count (q/k/v are hidden x hidden either way); pass attention_head_dim= for other models.
PIXART_HEAD_DIM = 72
# Sin-cos position-table scale per training resolution, as in PixArt's inference scripts (latent size -> scale).
_INTERPOLATION_BY_SAMPLE_SIZE = {32: 0.5, 64: 1.0, 128: 2.0, 256: 4.0}
_TOKENS_TO_VARIANT = {120: "alpha", 300: "sigma"}

_TOP_LEVEL = {
    "x_embedder.proj": "pos_embed.proj",
    "y_embedder.y_proj.fc1": "caption_projection.linear_1",
    "y_embedder.y_proj.fc2": "caption_projection.linear_2",
    "t_embedder.mlp.0": "adaln_single.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "adaln_single.emb.timestep_embedder.linear_2",
    "csize_embedder.mlp.0": "adaln_single.emb.resolution_embedder.linear_1",
    "csize_embedder.mlp.2": "adaln_single.emb.resolution_embedder.linear_2",
    "ar_embedder.mlp.0": "adaln_single.emb.aspect_ratio_embedder.linear_1",
    "ar_embedder.mlp.2": "adaln_single.emb.aspect_ratio_embedder.linear_2",
    "t_block.1": "adaln_single.linear",
    "final_layer.linear": "proj_out",
}
_IN_BLOCK = {
    "attn.proj": "attn1.to_out.0",
    "cross_attn.q_linear": "attn2.to_q",
    "cross_attn.proj": "attn2.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_SPLIT_IN_BLOCK = {
    "attn.qkv": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
    "cross_attn.kv_linear": ("attn2.to_k", "attn2.to_v"),
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")
_SIZE_HINT = re.compile(r"(?<![0-9])(256|512|1024|2048|2k)(?![0-9])")


@dataclass(frozen=True)
class PixArtCheckpointInfo:
    """What a PixArt checkpoint is, as inferred from its tensors (or a folder's config).

    ``variant`` is ``"alpha"`` (120 text tokens), ``"sigma"`` (300) or ``"unknown"`` (diffusers-key files carry no
    text-token table); ``max_text_tokens`` is then ``None`` and callers pick 120 (alpha) by default.
    """

    variant: str
    source_format: str  # "original", "diffusers" or "folder"
    num_layers: int
    hidden_size: int
    attention_head_dim: int
    num_attention_heads: int
    in_channels: int
    out_channels: int
    patch_size: int
    caption_channels: int | None
    sample_size: int
    interpolation_scale: float
    use_additional_conditions: bool
    max_text_tokens: int | None

    def to_diffusers_config(self) -> dict:
        """Keyword arguments for ``PixArtTransformer2DModel``."""
        return dict(
            num_attention_heads=self.num_attention_heads,
            attention_head_dim=self.attention_head_dim,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            num_layers=self.num_layers,
            cross_attention_dim=self.hidden_size,
            attention_bias=True,
            sample_size=self.sample_size,
            patch_size=self.patch_size,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
            interpolation_scale=self.interpolation_scale,
            use_additional_conditions=self.use_additional_conditions,
            caption_channels=self.caption_channels,
        )

    def as_dict(self) -> dict:
        return asdict(self)


def convert_pixart_original_to_diffusers(
    state_dict: dict[str, torch.Tensor], source: str = "state dict"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename original PixArt keys to diffusers ones; returns ``(converted, extras)``.

    ``extras`` holds the tensors diffusers has no parameter for: ``"pos_embed"`` (the fixed sin-cos table, used
    here to infer the training resolution) and ``"y_embedding"`` (the learned null caption, 120 or 300 rows).
    Unknown keys are passed through unchanged, so the strict load reports them. Prefixes must already be removed.
    """
    converted: dict[str, torch.Tensor] = {}
    extras: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key == "pos_embed":
            extras["pos_embed"] = tensor
            continue
        if key == "y_embedder.y_embedding":
            extras["y_embedding"] = tensor
            continue
        if key == "final_layer.scale_shift_table":
            converted["scale_shift_table"] = tensor
            continue
        match = _BLOCK_KEY.match(key)
        if key.startswith("blocks.") and key.endswith(".scale_shift_table"):
            converted["transformer_" + key] = tensor
        elif match:
            depth, module, param = match.groups()
            prefix = f"transformer_blocks.{depth}."
            if module in ("attn.q_norm", "attn.k_norm"):
                raise UnsupportedFormatError(
                    source,
                    f"{key!r}: PixArt with qk-norm is not supported by diffusers' PixArtTransformer2DModel",
                )
            if module in _SPLIT_IN_BLOCK:
                targets = _SPLIT_IN_BLOCK[module]
                for target, piece in zip(targets, torch.chunk(tensor, len(targets), dim=0)):
                    converted[f"{prefix}{target}.{param}"] = piece.clone()
            elif module in _IN_BLOCK:
                converted[f"{prefix}{_IN_BLOCK[module]}.{param}"] = tensor
            else:
                converted[key] = tensor
        else:
            module, _, param = key.rpartition(".")
            converted[f"{_TOP_LEVEL[module]}.{param}" if module in _TOP_LEVEL else key] = tensor
    return converted, extras


def infer_pixart_config(
    state_dict: dict[str, torch.Tensor],
    extras: dict[str, torch.Tensor] | None = None,
    *,
    attention_head_dim: int | None = None,
    sample_size: int | None = None,
    interpolation_scale: float | None = None,
    name_hint: str = "",
    source_format: str = "diffusers",
) -> PixArtCheckpointInfo:
    """Infer a ``PixArtTransformer2DModel`` config from diffusers-named tensors (+ ``extras`` of the conversion).

    Shapes give depth, hidden size, patch size, in/out channels, caption channels and micro-conditions (1024-MS);
    ``extras["y_embedding"]`` gives the text length (120 alpha, 300 sigma); ``extras["pos_embed"]`` gives the
    training grid (sample_size) and the position-table interpolation scale. Without that table, ``sample_size``
    comes from the argument, a resolution in ``name_hint`` ("...-512-...", "...1024-MS..."), or 128 for MS models.
    """
    extras = extras or {}
    source = name_hint or "state dict"
    try:
        proj = state_dict["pos_embed.proj.weight"]
    except KeyError as err:
        raise WrongArchitectureError(source, "has no patch embedding (pos_embed.proj.weight)") from err
    hidden, in_channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    depth = 1 + max(
        (int(m.group(1)) for k in state_dict if (m := re.match(r"transformer_blocks\.(\d+)\.", k))), default=-1
    )
    if depth == 0:
        raise WrongArchitectureError(source, "has no transformer blocks (transformer_blocks.N / blocks.N)")
    out_rows = int(state_dict["proj_out.weight"].shape[0]) if "proj_out.weight" in state_dict else patch * patch * 8
    if out_rows % (patch * patch):
        raise ModelLoadError(source, f"proj_out has {out_rows} rows, not a multiple of patch_size^2 = {patch * patch}")
    caption = state_dict.get("caption_projection.linear_1.weight")
    head_dim = int(attention_head_dim) if attention_head_dim is not None else PIXART_HEAD_DIM
    if head_dim <= 0 or hidden % head_dim:
        raise ModelLoadError(
            source,
            f"attention_head_dim {head_dim} does not divide the hidden size {hidden}; pass attention_head_dim= "
            f"(released PixArt models use {PIXART_HEAD_DIM})",
        )
    micro = "adaln_single.emb.resolution_embedder.linear_1.weight" in state_dict
    tokens = int(extras["y_embedding"].shape[0]) if "y_embedding" in extras else None
    variant = (
        _TOKENS_TO_VARIANT.get(tokens, "unknown")
        if tokens
        else ("sigma" if "sigma" in name_hint.lower() else "unknown")
    )

    table = extras.get("pos_embed")
    size_from_table = None
    if table is not None:
        grid = round(table.shape[-2] ** 0.5)
        if grid * grid != table.shape[-2] or table.shape[-1] != hidden:
            raise ModelLoadError(source, f"pos_embed has shape {tuple(table.shape)}, not (1, grid*grid, {hidden})")
        size_from_table = grid * patch
    if sample_size is not None:
        if size_from_table is not None and int(sample_size) != size_from_table:
            logger.warning(
                "%s: sample_size=%s overrides %s from the position table", source, sample_size, size_from_table
            )
        size = int(sample_size)
    elif size_from_table is not None:
        size = size_from_table
    else:
        size = _size_from_name(name_hint) or (128 if micro else 0)
        if not size:
            raise ModelLoadError(
                source,
                "cannot tell the training resolution (no pos_embed table, no resolution in the file name); pass "
                "sample_size=64 (512 px), 128 (1024 px) or 256 (2048 px)",
            )
    if size <= 0 or size % patch:
        raise ValueError(f"sample_size: {size} must be a positive multiple of the patch size {patch}")
    if micro and size != 128:
        logger.warning(
            "%s: micro-conditioned (MS) model with sample_size %d; diffusers pipelines expect 128", source, size
        )

    scale = _interpolation_scale(table, hidden, size, patch, interpolation_scale, source)
    return PixArtCheckpointInfo(
        variant=variant,
        source_format=source_format,
        num_layers=depth,
        hidden_size=hidden,
        attention_head_dim=head_dim,
        num_attention_heads=hidden // head_dim,
        in_channels=in_channels,
        out_channels=out_rows // (patch * patch),
        patch_size=patch,
        caption_channels=int(caption.shape[1]) if caption is not None else None,
        sample_size=size,
        interpolation_scale=scale,
        use_additional_conditions=micro,
        max_text_tokens=tokens,
    )


def _size_from_name(name: str) -> int | None:
    found = {m.group(1) for m in _SIZE_HINT.finditer(Path(name).name.lower())}
    if len(found) != 1:
        return None
    pixels = 2048 if found == {"2k"} else int(found.pop())
    return pixels // 8


def _interpolation_scale(
    table: torch.Tensor | None, hidden: int, size: int, patch: int, override: float | None, source: str
) -> float:
    if override is not None:
        if override <= 0:
            raise ValueError(f"interpolation_scale: {override} must be > 0")
        return float(override)
    default = _INTERPOLATION_BY_SAMPLE_SIZE.get(size, float(max(size // 64, 1)))
    if table is None or size // patch != round(table.shape[-2] ** 0.5):
        return default
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    stored = table.reshape(-1, hidden).float()
    # The tables of different scales differ by O(1), so the first candidate within fp16 rounding is the one.
    for candidate in dict.fromkeys([default, 0.5, 1.0, 2.0, 4.0, float(max(size // 64, 1)), size / 64]):
        ref = get_2d_sincos_pos_embed(hidden, size // patch, base_size=size // patch, interpolation_scale=candidate)
        if (torch.as_tensor(ref).float() - stored).abs().max().item() <= 2e-3:
            return float(candidate)
    logger.warning("%s: pos_embed matches no known interpolation scale; using %s", source, default)
    return default


def load_pixart_transformer(
    path_or_id: str | os.PathLike,
    *,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    subfolder: str | None = None,
    attention_head_dim: int | None = None,
    sample_size: int | None = None,
    interpolation_scale: float | None = None,
):
    """Load a PixArt transformer (``PixArtTransformer2DModel``) in eval mode.

    Args:
        path_or_id: single file, diffusers model folder, pipeline folder (uses ``transformer/``) or hub id.
        torch_dtype: dtype of the returned model (default float32); strings like ``"fp16"`` work too.
        device: where to put it (default CPU).
        subfolder: component folder inside a pipeline folder / hub repo (default ``"transformer"``).
        attention_head_dim: single files only; head width (default 72, true of all released PixArt models).
        sample_size: single files only; latent training size when the file has no position table (64 = 512 px).
        interpolation_scale: single files only; position-table scale when it cannot be inferred.

    Raises:
        ModelLoadError (or a subclass) naming the path: missing/corrupt file, wrong architecture, key or shape
        mismatch, hub unavailable.
    """
    return load_pixart_transformer_with_info(
        path_or_id,
        torch_dtype=torch_dtype,
        device=device,
        subfolder=subfolder,
        attention_head_dim=attention_head_dim,
        sample_size=sample_size,
        interpolation_scale=interpolation_scale,
    )[0]


def load_pixart_transformer_with_info(
    path_or_id: str | os.PathLike,
    *,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    subfolder: str | None = None,
    attention_head_dim: int | None = None,
    sample_size: int | None = None,
    interpolation_scale: float | None = None,
):
    """Like :func:`load_pixart_transformer`, returning ``(model, PixArtCheckpointInfo)``.

    The info tells alpha from sigma (``max_text_tokens`` 120 / 300) for the text encoder's padding length.
    """
    from diffusers import PixArtTransformer2DModel

    dtype = resolve_dtype(torch_dtype)
    source = resolve_source(path_or_id, "transformer", subfolder)
    if source.kind == "file":
        return _load_single_file(
            Path(source.path), dtype, device, attention_head_dim, sample_size, interpolation_scale
        )
    if source.kind == "folder":
        _check_folder_config(Path(source.path))
        model = load_diffusers_folder(PixArtTransformer2DModel, source.path, what="PixArt transformer", dtype=dtype,
                                      device=device)
    else:
        model = from_hub_repo(
            source,
            "transformer",
            "PixArt transformer",
            lambda sub: PixArtTransformer2DModel.from_pretrained(source.path, subfolder=sub, torch_dtype=dtype),
        )
    if device is not None:
        model.to(device)
    return model.eval(), _info_from_config(dict(model.config), source)


def _wrap(path: str, fn):
    try:
        return fn()
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise ModelLoadError(path, f"could not load the diffusers model folder ({type(err).__name__}: {err})") from err


def _check_folder_config(folder: Path) -> None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(folder / "config.json", f"unreadable config ({err})") from err
    name = config.get("_class_name", "")
    if name not in ("PixArtTransformer2DModel", "Transformer2DModel") or config.get(
        "norm_type", "ada_norm_single"
    ) != ("ada_norm_single"):
        raise WrongArchitectureError(
            folder, f"config.json describes a {name or 'non-diffusers model'}, not a PixArt transformer"
        )


def _info_from_config(config: dict, source: Source) -> PixArtCheckpointInfo:
    variant = "unknown"
    if source.pipeline is not None:
        try:
            index = json.loads((Path(source.pipeline) / "model_index.json").read_text(encoding="utf-8"))
            variant = {"PixArtAlphaPipeline": "alpha", "PixArtSigmaPipeline": "sigma"}.get(
                index.get("_class_name"), "unknown"
            )
        except (OSError, ValueError):
            pass
    size = int(config["sample_size"])
    micro = config.get("use_additional_conditions")
    scale = config.get("interpolation_scale")
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    return PixArtCheckpointInfo(
        variant=variant,
        source_format="folder",
        num_layers=int(config["num_layers"]),
        hidden_size=heads * head_dim,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        in_channels=int(config["in_channels"]),
        out_channels=int(config.get("out_channels") or config["in_channels"]),
        patch_size=int(config["patch_size"]),
        caption_channels=config.get("caption_channels"),
        sample_size=size,
        interpolation_scale=float(scale if scale is not None else max(size // 64, 1)),
        use_additional_conditions=bool(size == 128 if micro is None else micro),
        max_text_tokens={"alpha": 120, "sigma": 300}.get(variant),
    )


def _load_single_file(path: Path, dtype, device, head_dim, sample_size, interpolation_scale):
    from diffusers import PixArtTransformer2DModel

    raw = read_state_dict(path)
    found = sniff_components(raw)
    if "pixart" in found:
        prefix = find_prefix(raw, ("x_embedder.proj.weight",))
        selected = select_prefix(raw, prefix or "")
        converted, extras = infer_config(
            lambda: convert_pixart_original_to_diffusers(selected, str(path)),
            source=str(path),
            what="PixArt transformer",
        )
        fmt = "original"
    elif "pixart_diffusers" in found:
        prefix = find_prefix(raw, ("pos_embed.proj.weight",))
        converted, extras, fmt = select_prefix(raw, prefix or ""), {}, "diffusers"
    else:
        arch = sniff_architecture(raw)
        raise WrongArchitectureError(path, f"looks like {describe_architecture(arch)}, not a PixArt transformer")
    del raw
    if prefix:
        logger.info("%s: using the keys under %r", path, prefix)
    info = infer_config(
        lambda: infer_pixart_config(
            converted,
            extras,
            attention_head_dim=head_dim,
            sample_size=sample_size,
            interpolation_scale=interpolation_scale,
            name_hint=str(path),
            source_format=fmt,
        ),
        source=str(path),
        what="PixArt transformer",
    )
    model = empty_model(
        lambda: PixArtTransformer2DModel(**info.to_diffusers_config()), source=str(path), what="PixArt transformer"
    )
    model = load_strict(model, converted, source=str(path), what="PixArt transformer", dtype=dtype, device=device)
    logger.info("%s: loaded PixArt-%s (%s keys): %s", path, info.variant, fmt, info)
    return model, info
