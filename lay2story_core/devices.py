"""Device and dtype choice: the one rule every host uses (CLI, pipeline helpers, benchmarks, ComfyUI nodes).

A host that knows better (ComfyUI's model management) passes its answer in as ``preferred`` / ``bf16_supported``
instead of re-implementing the rule.
"""

from __future__ import annotations

import torch

__all__ = ["DTYPE_NAMES", "pick_device", "pick_dtype"]

DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def pick_device(choice: str | torch.device = "auto", *, preferred: torch.device | str | None = None,
                field: str = "device") -> torch.device:
    """``"auto"``: ``preferred`` (the host's device) when given, else CUDA when available, else the CPU.
    ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... as named; CUDA without a CUDA device raises ``ValueError`` naming
    ``field``."""
    if isinstance(choice, torch.device):
        choice = str(choice)
    if not isinstance(choice, str):
        raise ValueError(f"{field}: expected 'auto', 'cpu' or 'cuda[:N]', got {choice!r}")
    if choice == "auto":
        if preferred is not None:
            return torch.device(preferred)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise ValueError(f"{field}: expected 'auto', 'cpu' or 'cuda[:N]', got {choice!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{field}: {choice!r} was chosen but torch sees no CUDA device; pick 'auto' or 'cpu'")
        if preferred is not None and torch.device(preferred).type == "cuda" and device.index is None:
            return torch.device(preferred)
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"{field}: expected 'auto', 'cpu' or 'cuda[:N]', got {choice!r}")
    return device


def pick_dtype(choice: str | torch.dtype, device: torch.device, *, bf16_supported: bool | None = None,
               field: str = "precision") -> torch.dtype:
    """``"auto"``: float32 on the CPU; on an accelerator bfloat16 where supported (``bf16_supported``: the host's
    answer; else torch's), else float16. Named dtypes (``fp32``/``float32``, ``bf16``, ``fp16``) as named."""
    if isinstance(choice, torch.dtype):
        return choice
    if choice in DTYPE_NAMES:
        return DTYPE_NAMES[choice]
    if choice != "auto":
        raise ValueError(f"{field}: expected one of {('auto', *DTYPE_NAMES)}, got {choice!r}")
    if device.type == "cpu":
        return torch.float32
    if bf16_supported is None:
        bf16_supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16
