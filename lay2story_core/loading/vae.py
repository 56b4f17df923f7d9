"""Load a VAE (diffusers ``AutoencoderKL``) from a folder or a single file, never asking the hub for a config.

Single files may use the original LDM/SD key names (``encoder.down.0.block.0...``, as in ``sdxl_vae.safetensors``
or ``vae-ft-mse-840000-ema-pruned``), possibly inside a full SD checkpoint (``first_stage_model.`` / ``vae.``
prefix), or diffusers key names. The architecture comes from tensor shapes; the rest (scaling factor, sample size)
from a bundled config: ``"sd"`` (SD 1.x VAE as used by PixArt-alpha, scaling 0.18215) or ``"sdxl"`` (PixArt-Sigma,
0.13025), chosen by ``config=`` or by "sdxl" in the file name. The key conversion follows diffusers'
``convert_ldm_vae_checkpoint`` (``diffusers/loaders/single_file_utils.py``, Apache-2.0), written as per-key rules.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from pathlib import Path

import torch

from .errors import ModelLoadError, ModelNotFoundError, WrongArchitectureError
from .folder import load_diffusers_folder
from .modeling import empty_model, infer_config, load_strict, resolve_dtype
from .sniff import describe_architecture, sniff_architecture
from .sources import from_hub_repo, resolve_source
from .state_dict import find_prefix, preview_keys, read_state_dict, select_prefix

__all__ = ["BUNDLED_VAE_CONFIGS", "bundled_vae_config", "convert_ldm_vae_to_diffusers", "infer_vae_config", "load_vae"]

logger = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).with_name("configs")
BUNDLED_VAE_CONFIGS = {"sd": "sd_vae.json", "sdxl": "sdxl_vae.json"}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_DROPPED_PREFIXES = ("loss.", "model_ema.")


def bundled_vae_config(name: str) -> dict:
    """A copy of a bundled VAE config: ``"sd"`` or ``"sdxl"``."""
    if name not in BUNDLED_VAE_CONFIGS:
        raise ValueError(f"config: unknown bundled VAE config {name!r}; use one of {sorted(BUNDLED_VAE_CONFIGS)}")
    return json.loads((_CONFIG_DIR / BUNDLED_VAE_CONFIGS[name]).read_text(encoding="utf-8"))


def convert_ldm_vae_to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename LDM VAE keys (prefix removed) to diffusers ``AutoencoderKL`` keys; unknown keys pass through.

    Decoder up-blocks are numbered in reverse in diffusers; attention 1x1 convolutions become linear weights.
    """
    ups = {int(m.group(1)) for k in state_dict if (m := re.match(r"decoder\.up\.(\d+)\.", k))}
    num_up = max(ups, default=-1) + 1
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        new = _convert_key(key, num_up)
        if ".attentions.0." in new and new.endswith(".weight") and tensor.ndim > 2:
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
        out[new] = tensor
    return out


def _shortcut(rest: str) -> str:
    return rest.replace("nin_shortcut", "conv_shortcut")


def _convert_key(key: str, num_up: int) -> str:
    if m := re.match(r"^(encoder|decoder)\.norm_out\.(.+)$", key):
        return f"{m[1]}.conv_norm_out.{m[2]}"
    if m := re.match(r"^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$", key):
        return f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_shortcut(m[3])}"
    if m := re.match(r"^encoder\.down\.(\d+)\.downsample\.conv\.(.+)$", key):
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    if m := re.match(r"^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$", key):
        return f"decoder.up_blocks.{num_up - 1 - int(m[1])}.resnets.{m[2]}.{_shortcut(m[3])}"
    if m := re.match(r"^decoder\.up\.(\d+)\.upsample\.conv\.(.+)$", key):
        return f"decoder.up_blocks.{num_up - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
    if m := re.match(r"^(encoder|decoder)\.mid\.block_(\d+)\.(.+)$", key):
        return f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{_shortcut(m[3])}"
    if (m := re.match(r"^(encoder|decoder)\.mid\.attn_1\.(\w+)\.(weight|bias)$", key)) and m[2] in _ATTN:
        return f"{m[1]}.mid_block.attentions.0.{_ATTN[m[2]]}.{m[3]}"
    return key


def infer_vae_config(
    state_dict: dict[str, torch.Tensor], base: dict | None = None, source: str = "state dict"
) -> dict:
    """An ``AutoencoderKL`` config: ``base`` (default the bundled SD one) with the architecture read off the shapes.

    Shapes give in/out/latent channels, per-level widths, resnets per level, quant convs and the mid attention.
    ``norm_num_groups`` cannot be seen in shapes; it comes from ``base`` and must divide every width.
    """
    config = dict(base if base is not None else bundled_vae_config("sd"))
    try:
        conv_in = state_dict["encoder.conv_in.weight"]
        latent = int(state_dict["decoder.conv_in.weight"].shape[1])
        out_channels = int(state_dict["decoder.conv_out.weight"].shape[0])
        levels = 1 + max(
            (int(m[1]) for k in state_dict if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))), default=-1
        )
        widths = [int(state_dict[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0])
                  for i in range(levels)]
        in_channels = int(conv_in.shape[1])
    except KeyError as err:
        raise WrongArchitectureError(source, f"is not a complete AutoencoderKL (no {err.args[0]})") from err
    except IndexError as err:
        raise WrongArchitectureError(source, "is not an AutoencoderKL (a convolution weight is not 4-d)") from err
    layers = len({m[1] for k in state_dict if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))})
    config.update(
        in_channels=in_channels,
        out_channels=out_channels,
        latent_channels=latent,
        block_out_channels=widths,
        layers_per_block=layers,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        use_quant_conv="quant_conv.weight" in state_dict,
        use_post_quant_conv="post_quant_conv.weight" in state_dict,
        mid_block_add_attention=any(k.startswith("encoder.mid_block.attentions.0.") for k in state_dict),
    )
    groups = int(config.get("norm_num_groups", 32))
    if any(w % groups for w in widths):
        raise ModelLoadError(
            source,
            f"norm_num_groups {groups} does not divide the widths {widths}; pass config={{'norm_num_groups': N}}",
        )
    return config


def load_vae(
    path_or_id: str | os.PathLike,
    *,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    config: str | os.PathLike | dict | None = None,
    subfolder: str | None = None,
):
    """Load an ``AutoencoderKL`` in eval mode.

    Args:
        path_or_id: single file, diffusers VAE folder, pipeline folder (uses ``vae/``) or hub id.
        torch_dtype: dtype of the returned model (default float32).
        device: where to put it (default CPU).
        config: single files only. ``"sd"`` / ``"sdxl"`` (bundled; the architecture is still read from the
            shapes), a config.json path or folder, or a dict (their values win over the shapes, so a wrong one
            fails with a shape error). Default: ``"sdxl"`` if the file name says so, else ``"sd"``.
        subfolder: component folder inside a pipeline folder / hub repo (default ``"vae"``).
    """
    from diffusers import AutoencoderKL

    dtype = resolve_dtype(torch_dtype)
    source = resolve_source(path_or_id, "vae", subfolder)
    if source.kind == "file":
        return _load_single_file(Path(source.path), dtype, device, config)
    if config is not None:
        logger.warning("%s: config= applies to single files only; using the folder's config.json", source.path)
    if source.kind == "folder":
        _check_folder_config(Path(source.path))
        model = load_diffusers_folder(AutoencoderKL, source.path, what="VAE", dtype=dtype, device=device,
                                      rename=rename_deprecated_attention)
    else:
        model = from_hub_repo(
            source,
            "vae",
            "VAE",
            lambda sub: AutoencoderKL.from_pretrained(source.path, subfolder=sub, torch_dtype=dtype),
        )
    if device is not None:
        model.to(device)
    return model.eval()


_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_deprecated_attention(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old diffusers VAE folders name the mid-block attention ``query/key/value/proj_attn`` (diffusers renames them
    on load too): ``...attentions.0.query.weight`` -> ``...attentions.0.to_q.weight``."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if len(parts) >= 3 and "attentions" in parts and parts[-2] in _DEPRECATED_ATTENTION:
            parts[-2] = _DEPRECATED_ATTENTION[parts[-2]]
            key = ".".join(parts)
        out[key] = value
    return out


def _check_folder_config(folder: Path) -> None:
    try:
        name = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError) as err:
        raise ModelLoadError(folder / "config.json", f"unreadable config ({err})") from err
    if name != "AutoencoderKL":
        raise WrongArchitectureError(
            folder, f"config.json describes a {name or 'non-diffusers model'}, not an AutoencoderKL"
        )


def _user_config(config: str | os.PathLike | dict | None, path: Path) -> tuple[dict, set[str]]:
    """(config dict, the keys the user gave explicitly: those win over the shapes)."""
    if config is None:
        name = "sdxl" if "sdxl" in path.name.lower() else "sd"
        logger.info("%s: using the bundled %s VAE config (pass config= to change)", path, name)
        return bundled_vae_config(name), set()
    if isinstance(config, dict):
        return {**bundled_vae_config("sd"), **config}, set(config)
    if isinstance(config, str) and config in BUNDLED_VAE_CONFIGS:
        return bundled_vae_config(config), set()
    file = Path(config)
    if not file.exists():
        raise ModelNotFoundError(
            config,
            f"config: neither a bundled VAE config {sorted(BUNDLED_VAE_CONFIGS)} nor a config.json file or folder",
        )
    file = file / "config.json" if file.is_dir() else file
    try:
        loaded = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(file, f"config: cannot read a VAE config ({err})") from err
    return loaded, set(loaded)


def _load_single_file(path: Path, dtype: torch.dtype, device, config):
    from diffusers import AutoencoderKL

    raw = read_state_dict(path)
    prefix = find_prefix(raw, ("decoder.conv_in.weight",))
    if prefix is None:
        raise WrongArchitectureError(path, f"looks like {describe_architecture(sniff_architecture(raw))}, not a VAE")
    sd = select_prefix(raw, prefix)
    del raw
    if prefix:
        logger.info("%s: using the VAE keys under %r", path, prefix)
    dropped = [k for k in sd if k.startswith(_DROPPED_PREFIXES)]
    for key in dropped:
        del sd[key]
    if dropped:
        logger.info("%s: ignoring %d training-only keys (%s)", path, len(dropped), preview_keys(dropped, 3))
    if any(k.startswith("encoder.down.") for k in sd):
        sd = convert_ldm_vae_to_diffusers(sd)
    base, explicit = _user_config(config, path)
    inferred = infer_config(lambda: infer_vae_config(sd, base, str(path)), source=str(path), what="VAE")
    final = {**inferred, **{k: base[k] for k in explicit}}
    accepted = inspect.signature(AutoencoderKL.__init__).parameters
    final = {k: v for k, v in final.items() if k in accepted and k != "self"}
    model = empty_model(lambda: AutoencoderKL(**final), source=str(path), what="VAE")
    return load_strict(model, sd, source=str(path), what="VAE", dtype=dtype, device=device)
