"""Build a model without allocating random weights, check a state dict against it strictly, and load it.

Models are instantiated with parameters on the ``meta`` device (buffers stay real, e.g. PixArt's sin-cos position
table), so building PixArt-XL or T5-XXL costs nothing; the checked state dict is then assigned in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch
from torch import nn

from .errors import ModelLoadError, ShapeMismatchError, StateDictKeysError, WrongArchitectureError
from .state_dict import cast_state_dict, preview_keys

__all__ = ["check_state_dict", "empty_model", "infer_config", "load_strict", "resolve_dtype"]

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=nn.Module)
T = TypeVar("T")


def resolve_dtype(torch_dtype: torch.dtype | str | None, field: str = "torch_dtype") -> torch.dtype:
    """``None`` -> float32; strings like ``"fp16"``, ``"bfloat16"`` -> the torch dtype; bad values raise."""
    if torch_dtype is None:
        return torch.float32
    if isinstance(torch_dtype, torch.dtype):
        if not torch_dtype.is_floating_point:
            raise ValueError(f"{field}: {torch_dtype} is not a floating point dtype")
        return torch_dtype
    names = {
        "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    }  # fmt: skip
    key = str(torch_dtype).lower().removeprefix("torch.")
    if key not in names:
        raise ValueError(f"{field}: unknown dtype {torch_dtype!r}; use one of {sorted(names)} or a torch.dtype")
    return names[key]


def infer_config(fn: Callable[[], T], *, source: str, what: str) -> T:
    """Run a shape-based config inference; a tensor of an unexpected rank or a missing key (a damaged or foreign
    file) becomes a :class:`WrongArchitectureError` instead of an ``IndexError``/``KeyError``."""
    try:
        return fn()
    except ModelLoadError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as err:
        raise WrongArchitectureError(source, f"its tensors do not describe a {what} ({type(err).__name__}: {err})"
                                     ) from err


def empty_model(factory: Callable[[], M], *, source: str, what: str) -> M:
    """Call ``factory`` with parameters created on the meta device (buffers are real).

    A config the model class rejects (e.g. widths not divisible by the group count) becomes a ModelLoadError.
    """
    from accelerate import init_empty_weights

    try:
        with init_empty_weights(include_buffers=False):
            return factory()
    except (ValueError, TypeError, RuntimeError, NotImplementedError, ArithmeticError, LookupError, AttributeError,
            AssertionError) as err:  # what model constructors raise for configs they cannot build
        raise ModelLoadError(source, f"cannot build the {what} from the inferred/given config "
                                     f"({type(err).__name__}: {err})") from err


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, what: str) -> None:
    """Raise unless ``state_dict`` has exactly the model's keys, each with the model's shape.

    Raises:
        StateDictKeysError: missing and/or unexpected keys (both listed, first few in the message).
        ShapeMismatchError: names the first key (in model order) whose shape differs, with both shapes.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = sorted(k for k in state_dict if k not in expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {preview_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {preview_keys(unexpected)}")
        raise StateDictKeysError(
            source, f"the weights do not match the {what} they describe; " + "; ".join(parts), missing, unexpected
        )
    for key, ref in expected.items():
        if ref.is_floating_point() and not state_dict[key].is_floating_point():
            raise ModelLoadError(source, f"dtype mismatch for the {what} at {key!r}: the file has "
                                         f"{state_dict[key].dtype}, the model expects floating point weights")
        found = tuple(state_dict[key].shape)
        if found != tuple(ref.shape):
            raise ShapeMismatchError(
                source,
                f"shape mismatch for the {what} at {key!r}: the file has {found}, the model expects "
                f"{tuple(ref.shape)} (a tensor from another model size, or a wrong config override)",
                key,
                tuple(ref.shape),
                found,
            )


def load_strict(
    model: M,
    state_dict: dict[str, torch.Tensor],
    *,
    source: str,
    what: str,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    keep_fp32: Iterable[str] = (),
) -> M:
    """Check, cast and assign ``state_dict`` into an :func:`empty_model`; return it in eval mode on ``device``.

    Non-persistent buffers keep their computed values but follow ``dtype``, as ``Module.to(dtype)`` would do.
    """
    check_state_dict(model, state_dict, source, what)
    cast_state_dict(state_dict, dtype, keep_fp32)
    model.load_state_dict(state_dict, strict=True, assign=True)
    left = [name for name, p in model.named_parameters() if p.is_meta]
    if left:  # tied parameters not listed in the state dict would end up here
        raise ModelLoadError(source, f"internal error: parameters left unloaded: {preview_keys(left)}")
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                setattr(module, name, buf.to(dtype))
    if device is not None:
        model.to(device)
    return model.eval()
