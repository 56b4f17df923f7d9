"""The one safe reader of weight files, and small state-dict helpers shared by the loaders.

Weights are read with safetensors, or with ``torch.load(weights_only=True)`` for pickled ``.pth/.pt/.bin/.ckpt``
files: nothing here ever unpickles arbitrary Python objects.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from .errors import CorruptFileError, ModelNotFoundError, UnsupportedFormatError

__all__ = [
    "PICKLE_SUFFIXES",
    "SAFETENSORS_SUFFIXES",
    "WEIGHT_SUFFIXES",
    "cast_state_dict",
    "find_prefix",
    "preview_keys",
    "read_state_dict",
    "select_prefix",
]

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES
_REFUSED_SUFFIXES = {
    ".gguf": "GGUF files are quantised llama.cpp containers; use a .safetensors or .pth version of the model",
    ".onnx": "ONNX files are exported graphs, not weights these loaders can read",
    ".npz": "numpy archives are not supported; use a .safetensors file",
}
# Wrappers seen around real state dicts: PixArt/Lightning {"state_dict": ...}, DiT/DeepSpeed {"model"|"module": ...}.
_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "state_dict_ema", "ema")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read every tensor of a weights file onto the CPU, unwrapping ``{"state_dict": ...}``-style containers.

    ``.safetensors`` (and ``.sft``) are read with safetensors; ``.pth/.pt/.bin/.ckpt`` with
    ``torch.load(weights_only=True)``. Key names are returned as stored (no prefix stripping).

    Raises:
        ModelNotFoundError: the path does not exist or is a folder.
        UnsupportedFormatError: a known but unsupported format (``.gguf``, ...) or an unknown suffix.
        CorruptFileError: the file is truncated, not a weights file, holds non-weight pickled objects, or no tensors.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(path, "no such file")
    if path.is_dir():
        raise ModelNotFoundError(path, "is a folder, expected a weights file (.safetensors, .pth, .pt, .bin, .ckpt)")
    suffix = path.suffix.lower()
    if suffix in _REFUSED_SUFFIXES:
        raise UnsupportedFormatError(path, _REFUSED_SUFFIXES[suffix])
    if path.stat().st_size == 0:
        raise CorruptFileError(path, "the file is empty (0 bytes); the download or copy did not finish")
    if suffix in SAFETENSORS_SUFFIXES:
        loaded: object = _read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        loaded = _read_pickle(path)
    else:
        raise UnsupportedFormatError(
            path,
            f"unknown weights file type {suffix or '(no suffix)'!r}; expected one of {', '.join(WEIGHT_SUFFIXES)}",
        )
    return _unwrap(path, loaded)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFileError(
            path, f"not a readable safetensors file, probably truncated or corrupt ({type(err).__name__}: {err})"
        ) from err


def _read_pickle(path: Path) -> object:
    errors: list[BaseException] = []
    # mmap avoids a second copy of big checkpoints; it only works for the zip format, so fall back without it.
    for mmap in (True, False):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as err:
            if "weights only" in str(err).lower() or "weights_only" in str(err).lower():
                raise CorruptFileError(
                    path,
                    "holds pickled Python objects besides tensors; it is refused because loading it could run code "
                    "(only torch.load(weights_only=True) is used). Convert it to .safetensors in a trusted "
                    f"environment. Detail: {str(err).splitlines()[0]}",
                ) from err
            errors.append(err)
        except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as err:
            errors.append(err)
    last = errors[-1]
    raise CorruptFileError(
        path, f"not a readable PyTorch checkpoint, probably truncated or corrupt ({type(last).__name__}: {last})"
    ) from last


def _unwrap(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    for _ in range(3):
        inner = None
        if isinstance(loaded, Mapping):
            inner = next((loaded[k] for k in _WRAPPER_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if inner is None:
            break
        loaded = inner
    if not isinstance(loaded, Mapping):
        raise CorruptFileError(path, f"holds a {type(loaded).__name__}, not a dict of tensors")
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CorruptFileError(path, f"holds no tensors (top-level keys: {preview_keys(loaded.keys())})")
    dropped = [str(k) for k in loaded if not isinstance(loaded[k], torch.Tensor)]
    if dropped:
        logger.debug("%s: ignoring non-tensor entries %s", path, preview_keys(dropped))
    return tensors


def find_prefix(keys: Iterable[str], anchors: Iterable[str]) -> str | None:
    """The prefix in front of the first anchor suffix found among ``keys`` (``""`` if unprefixed), else ``None``.

    Example: anchors ``("x_embedder.proj.weight",)`` and a key ``"module.x_embedder.proj.weight"`` give
    ``"module."``. When several prefixes carry the anchor the shortest wins (the outermost model).
    """
    keys = list(keys)
    for anchor in anchors:
        found = [k[: len(k) - len(anchor)] for k in keys if k.endswith(anchor)]
        found = [p for p in found if p == "" or p.endswith(".")]
        if found:
            return min(found, key=len)
    return None


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under ``prefix`` with the prefix removed (all keys when the prefix is empty)."""
    if not prefix:
        return dict(state_dict)
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def cast_state_dict(
    state_dict: dict[str, torch.Tensor], dtype: torch.dtype, keep_fp32: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """Cast floating tensors to ``dtype`` in place (one tensor at a time, so peak memory stays ~1x).

    Keys containing one of ``keep_fp32`` (module names such as ``"wo"``, matched as a dotted component) stay float32.
    """
    keep = tuple(keep_fp32)
    for key in list(state_dict):
        tensor = state_dict[key]
        if not tensor.is_floating_point():
            continue
        target = torch.float32 if keep and any(f".{name}." in f".{key}" for name in keep) else dtype
        if tensor.dtype != target:
            state_dict[key] = tensor.to(target)
    return state_dict


def preview_keys(keys: Iterable[object], limit: int = 8) -> str:
    keys = [str(k) for k in keys]
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
