"""Load a diffusers/transformers model folder (``config.json`` + weights) strictly, without ``from_pretrained``.

``from_pretrained`` with wrong weights in a folder (VAE weights in ``transformer/``, ...) leaves meta tensors and
fails later with ``Cannot copy out of meta tensor``. Here the model is built from its config on the meta device,
every weight file of the folder is read with :func:`read_state_dict` (safetensors, or ``torch.load(weights_only)``),
and the keys and shapes are checked against the model (:func:`check_state_dict`) before anything is assigned or
moved to a device, so a mismatch is one :class:`StateDictKeysError` / :class:`ShapeMismatchError` naming the
component, the file and the first wrong keys.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .errors import ModelLoadError, ModelNotFoundError, StateDictKeysError
from .modeling import empty_model, load_strict
from .sniff import describe_architecture, sniff_architecture
from .state_dict import read_state_dict

__all__ = ["EMA_CONFIG_KEYS", "init_config", "load_diffusers_folder", "load_folder_strict", "read_folder_config",
           "read_folder_weights", "weight_files"]

logger = logging.getLogger(__name__)

# What diffusers' EMAModel.save_pretrained adds to a model's config.json: not model arguments, ignored silently.
EMA_CONFIG_KEYS = frozenset({"decay", "inv_gamma", "min_decay", "optimization_step", "power", "update_after_step",
                             "use_ema_warmup", "foreach"})
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")
_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def read_folder_config(folder: str | Path) -> dict:
    """``config.json`` of a model folder as a dict (a ModelLoadError naming the file when unreadable)."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelNotFoundError(path.parent, "has no config.json, so it is not a model folder") from err
    except (OSError, ValueError) as err:
        raise ModelLoadError(path, f"unreadable config ({type(err).__name__}: {err})") from err
    if not isinstance(config, dict):
        raise ModelLoadError(path, f"expected a JSON object, got {type(config).__name__}")
    return config


def init_config(cls: type, config: dict, source: str | Path) -> dict:
    """The entries of ``config`` that ``cls.__init__`` takes (``_``-prefixed metadata and EMA keys dropped
    silently, anything else unknown logged once at info level)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kept = {k: v for k, v in config.items() if k in accepted}
    unknown = sorted(k for k in config if k not in accepted and not k.startswith("_") and k not in EMA_CONFIG_KEYS)
    if unknown:
        logger.info("%s: config keys %s are not %s arguments; ignored", source, unknown, cls.__name__)
    return kept


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of a model folder: one file, or the shards an ``*.index.json`` lists (safetensors first)."""
    folder = Path(folder)
    for suffix in _SUFFIXES:
        for name in _WEIGHT_NAMES:
            index = folder / f"{name}{suffix}.index.json"
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                    return [folder / f for f in dict.fromkeys(weight_map.values())]
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                    raise ModelLoadError(index, f"unreadable shard index ({type(err).__name__}: {err})") from err
            single = folder / f"{name}{suffix}"
            if single.is_file():
                return [single]
    found = sorted(p.name for p in folder.iterdir() if p.suffix in _SUFFIXES + (".sft", ".ckpt"))
    if len(found) == 1:
        return [folder / found[0]]
    hint = f" (it holds {', '.join(found[:4])}: which one is meant?)" if found else ""
    raise ModelNotFoundError(folder, f"has no weights file (diffusion_pytorch_model.safetensors, model.safetensors, "
                                     f"...){hint}")


def read_folder_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Every tensor of the folder's weight file(s) and a description of where they came from (for messages)."""
    files = weight_files(folder)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(read_state_dict(file))
    where = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} shards)"
    return state, where


def load_folder_strict(
    build: Callable[[], torch.nn.Module],
    folder: str | Path,
    *,
    what: str,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    keep_fp32: Iterable[str] = (),
):
    """``build()`` on the meta device, then the folder's weights checked and assigned (see the module doc)."""
    folder = Path(folder)
    model = empty_model(build, source=str(folder), what=what)
    state, where = read_folder_weights(folder)
    if rename is not None:
        state = rename(state)
    try:
        return load_strict(model, state, source=where, what=what, dtype=dtype, device=device, keep_fp32=keep_fp32)
    except StateDictKeysError as err:
        found = sniff_architecture(state)
        if found == "unknown":
            raise
        hint = f" (the file looks like {describe_architecture(found)}: a file of another component?)"
        raise StateDictKeysError(err.source, err.detail + hint, err.missing, err.unexpected) from None


def load_diffusers_folder(
    cls: type,
    folder: str | Path,
    *,
    what: str,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    keep_fp32: Iterable[str] = (),
):
    """A diffusers ``ModelMixin`` class loaded from ``folder`` strictly (see the module doc); eval mode."""
    folder = Path(folder)
    config = init_config(cls, read_folder_config(folder), folder / "config.json")
    model = load_folder_strict(lambda: cls.from_config(config), folder, what=what, dtype=dtype, device=device,
                               rename=rename, keep_fp32=keep_fp32)
    model.register_to_config(_name_or_path=str(folder))
    return model
