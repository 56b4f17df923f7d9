"""Every ComfyUI object the native path touches, in one place: ``MODEL`` (a ``ModelPatcher`` over ComfyUI's PixArt),
``CLIP`` (``comfy.sd.CLIP``), ``VAE`` (``comfy.sd.VAE``) and ``comfy.model_management``.

Imported lazily (``importlib``) so the pack loads without ComfyUI; the tests' stand-in registers modules of the same
names with the same interfaces (``tests/comfy_standin.py``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

import torch
from torch import nn

from .pixart import check_pixart

logger = logging.getLogger(__name__)

__all__ = [
    "ManagedModule",
    "check_clip",
    "check_native_model",
    "check_vae",
    "compute_dtype",
    "encode_texts",
    "load_models",
    "managed",
    "model_management",
    "vae_decode",
    "vae_encode",
]


def model_management():
    """``comfy.model_management``; ``ValueError`` when ComfyUI is not there (a native input outside ComfyUI)."""
    try:
        return importlib.import_module("comfy.model_management")
    except ImportError:
        raise ValueError("model: ComfyUI's MODEL/CLIP/VAE inputs need ComfyUI (comfy.model_management)") from None


# ------------------------------------------------------------------------------------------------ validation
def check_native_model(value: object, field: str = "pixart"):
    """A ``MODEL`` (``ModelPatcher``) whose ``diffusion_model`` is ComfyUI's PixArt; returns it."""
    inner = getattr(value, "model", None)
    if inner is None or not hasattr(value, "load_device") or not hasattr(inner, "diffusion_model"):
        raise ValueError(f"{field}: expected a MODEL (from Load Checkpoint / Load Diffusion Model), got "
                         f"{type(value).__name__}")
    check_pixart(inner.diffusion_model, field)
    return value


def check_clip(value: object, field: str = "clip"):
    if not (hasattr(value, "tokenize") and hasattr(value, "encode_from_tokens")):
        raise ValueError(f"{field}: expected a CLIP (Load CLIP, type pixart: T5-XXL), got {type(value).__name__}")
    return value


def check_vae(value: object, field: str = "vae"):
    if not (hasattr(value, "encode") and hasattr(value, "decode") and hasattr(value, "patcher")):
        raise ValueError(f"{field}: expected a VAE (Load VAE or a checkpoint's), got {type(value).__name__}")
    return value


def compute_dtype(model) -> torch.dtype:
    """The dtype ComfyUI computes a ``MODEL`` in (``BaseModel.manual_cast_dtype``, else ``get_dtype()``)."""
    inner = model.model
    return getattr(inner, "manual_cast_dtype", None) or inner.get_dtype()


# ---------------------------------------------------------------------------------------- model management
class ManagedModule(nn.Module):
    """Wraps a diffusers module (whose ``device`` is a read-only property) so a ``ModelPatcher`` can own it:
    ``ModelPatcher.load`` sets ``model.device`` and moves ``model``'s parameters."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module
        self.device = next(module.parameters()).device

    def get_dtype(self) -> torch.dtype:
        return next(self.inner.parameters()).dtype


def _comfy_ops(module: nn.Module) -> None:
    """Give the module's plain ``Linear``/``Conv2d``/``LayerNorm`` layers ComfyUI's weight casting
    (``comfy.ops.disable_weight_init``: the same layers, which low-VRAM loading can leave off the accelerator and
    cast per call, as ComfyUI's own models)."""
    ops = importlib.import_module("comfy.ops").disable_weight_init
    kinds = {nn.Linear: ops.Linear, nn.Conv2d: ops.Conv2d, nn.LayerNorm: ops.LayerNorm}
    for sub in module.modules():
        target = kinds.get(type(sub))
        if target is not None:
            sub.__class__ = target


def managed(module: nn.Module, load_device: torch.device | None = None):
    """A ``comfy.model_patcher.ModelPatcher`` over ``module`` (loaded, partially loaded, offloaded and freed by
    ComfyUI like any model): it loads to ComfyUI's torch device and waits on its offload device."""
    mm = model_management()
    patcher_module = importlib.import_module("comfy.model_patcher")
    _comfy_ops(module)
    device = load_device or mm.get_torch_device()
    return patcher_module.ModelPatcher(ManagedModule(module), load_device=device,
                                       offload_device=mm.unet_offload_device())


def load_models(model, extra: Sequence = (), memory_required: int = 0) -> None:
    """Ask ComfyUI to place the ``MODEL`` and the pack's models (``extra``: ``ModelPatcher`` s) for a story, as its
    samplers place a model and its ControlNets (one ``load_models_gpu`` call; partial loads in low-VRAM modes),
    freeing other models as needed."""
    mm = model_management()
    mm.load_models_gpu([model, *extra], memory_required=int(memory_required))


# ----------------------------------------------------------------------------------------------- CLIP, VAE
def encode_texts(clip, texts: Sequence[str], device: torch.device, dtype: torch.dtype):
    """T5 states ``(n, L, C)`` and mask ``(n, L)`` of ``texts`` through ComfyUI's CLIP (fp8/GGUF encoders
    included), each distinct text once. ComfyUI's PixArt tokenizer does not pad, so lengths differ: the batch is
    zero-padded and the mask marks each text's own tokens (attention over them equals ComfyUI's unpadded call)."""
    distinct = list(dict.fromkeys(texts))
    encoded = {}
    for text in distinct:
        tokens = clip.tokenize(text)
        cond = clip.encode_from_tokens(tokens, return_dict=True)["cond"]  # (1, L, C)
        encoded[text] = cond[0]
    length = max(e.shape[0] for e in encoded.values())
    channels = next(iter(encoded.values())).shape[-1]
    embeds = torch.zeros(len(texts), length, channels, device=device, dtype=dtype)
    mask = torch.zeros(len(texts), length, device=device, dtype=torch.long)
    for i, text in enumerate(texts):
        e = encoded[text]
        embeds[i, : e.shape[0]] = e.to(device=device, dtype=dtype)
        mask[i, : e.shape[0]] = 1
    return embeds, mask


def vae_encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` in [0, 1] -> raw VAE latents ``(B, 4, h, w)`` (``VAE.encode``; ComfyUI loads the VAE)."""
    return vae.encode(pixels[..., :3])


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents ``(B, 4, h, w)`` -> ``(B, H, W, 3)`` in [0, 1] (``VAE.decode``)."""
    return vae.decode(latents)
