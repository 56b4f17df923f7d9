"""Everything the Lay2Story nodes take from ComfyUI, in one place, imported lazily.

Inside ComfyUI this uses ``folder_paths`` (model folders; the pack registers ``models/lay2story`` and
``models/grounding-dino``), ``comfy.model_management`` (device, freeing memory, Cancel), ``comfy.utils.ProgressBar``
and ``latent_preview`` (sampler previews). Without ComfyUI (tests, scripts) every helper degrades gracefully:

- model folders come from the directory named by the environment variable ``LAY2STORY_MODELS_DIR`` (laid out like
  ComfyUI's ``models/``: ``checkpoints/``, ``diffusion_models/`` or ``unet/``, ``text_encoders/`` or ``clip/``,
  ``vae/``, ``diffusers/``, ``lay2story/``, ``grounding-dino/``); unset means no model lists;
- the device is CUDA when available, else the CPU; Cancel and previews are no-ops; the progress bar does nothing;
- saved files go to the folder named by ``LAY2STORY_OUTPUT_DIR`` (default ``<temp>/lay2story_output``), previews to
  ``<temp>/lay2story_ui``, numbered like ComfyUI's ``SaveImage``.

Callers go through this module's functions (``comfy_env.throw_if_interrupted()``, not a from-import), so tests can
replace them.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Callable

import torch

from lay2story_core import devices

logger = logging.getLogger(__name__)

MODELS_DIR_ENV = "LAY2STORY_MODELS_DIR"
OUTPUT_DIR_ENV = "LAY2STORY_OUTPUT_DIR"
WEIGHT_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt")
# Folder kinds this pack registers with ComfyUI (models/<name>).
PACK_FOLDERS = ("lay2story", "grounding-dino")
# Without ComfyUI: the subfolders of LAY2STORY_MODELS_DIR that make up each kind (ComfyUI's names and aliases).
FALLBACK_SUBFOLDERS = {
    "checkpoints": ("checkpoints",),
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "diffusers": ("diffusers",),
    "lay2story": ("lay2story",),
    "grounding-dino": ("grounding-dino",),
}
PREVIEW_FRAMES = 4  # frames side by side in a sampler preview

__all__ = [
    "MODELS_DIR_ENV",
    "comfy_t5_tokenizer_dir",
    "folder_paths_for",
    "free_memory",
    "full_model_path",
    "in_comfyui",
    "latent_previewer",
    "list_model_files",
    "list_model_folders",
    "offload_device",
    "progress_bar",
    "png_metadata",
    "resolve_device",
    "save_path",
    "resolve_dtype",
    "soft_empty_cache",
    "throw_if_interrupted",
]


def _module(name: str):
    """ComfyUI's module ``name``, or None outside ComfyUI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _folder_paths():
    """ComfyUI's ``folder_paths`` with this pack's folders registered (idempotent), or None."""
    module = _module("folder_paths")
    if module is None:
        return None
    known = getattr(module, "folder_names_and_paths", {})
    for name in PACK_FOLDERS:
        if name not in known:
            module.add_model_folder_path(name, os.path.join(module.models_dir, name))
    return module


def in_comfyui() -> bool:
    return _folder_paths() is not None


# ---------------------------------------------------------------------------------------------------- model folders
def folder_paths_for(kind: str) -> list[str]:
    """The folders that hold models of ``kind`` (``"checkpoints"``, ``"lay2story"``, ...), in priority order."""
    module = _folder_paths()
    if module is not None:
        try:
            return list(module.get_folder_paths(kind))
        except KeyError:
            return []
    root = os.environ.get(MODELS_DIR_ENV)
    if not root:
        return []
    return [os.path.join(root, sub) for sub in FALLBACK_SUBFOLDERS.get(kind, (kind,))]


def list_model_files(kind: str) -> list[str]:
    """Weight files of ``kind`` as names relative to their folder (``"sub/x.safetensors"``), sorted."""
    module = _folder_paths()
    if module is not None:
        try:
            names = module.get_filename_list(kind)
        except KeyError:
            names = []
        return sorted(n for n in names if n.lower().endswith(WEIGHT_EXTENSIONS))
    found = set()
    for base in folder_paths_for(kind):
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.lower().endswith(WEIGHT_EXTENSIONS):
                    found.add(os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/"))
    return sorted(found)


def list_model_folders(kind: str, accept: Callable[[str], bool], depth: int = 2) -> list[str]:
    """Sub-folders of ``kind``'s folders for which ``accept(path)`` holds (not searched below an accepted one),
    as names relative to their folder with ``/`` separators, sorted."""
    found = set()

    def walk(base: str, rel: str, level: int) -> None:
        path = os.path.join(base, rel) if rel else base
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            sub = f"{rel}/{entry.name}" if rel else entry.name
            if accept(entry.path):
                found.add(sub)
            elif level < depth:
                walk(base, sub, level + 1)

    for base in folder_paths_for(kind):
        walk(base, "", 1)
    return sorted(found)


def full_model_path(kind: str, name: str) -> str | None:
    """The path of file or folder ``name`` listed under ``kind``, or None when it is not there (any more)."""
    parts = name.replace("\\", "/").split("/")
    if not name or any(p in ("", ".", "..") for p in parts):
        return None
    for base in folder_paths_for(kind):
        path = os.path.join(base, *parts)
        if os.path.exists(path):
            return path
    return None


def comfy_t5_tokenizer_dir() -> str | None:
    """ComfyUI's bundled T5 tokenizer folder (``comfy/text_encoders/t5_tokenizer``), when ComfyUI is there."""
    comfy = _module("comfy") if in_comfyui() else None
    for root in list(getattr(comfy, "__path__", None) or []):  # a namespace package in some ComfyUI versions
        folder = os.path.join(root, "text_encoders", "t5_tokenizer")
        if os.path.isfile(os.path.join(folder, "tokenizer.json")):
            return folder
    return None


# ----------------------------------------------------------------------------------------------- devices and memory
def _model_management():
    return _module("comfy.model_management") if in_comfyui() else None


def resolve_device(choice: str, field: str = "device") -> torch.device:
    """``"auto"`` (ComfyUI's device, else CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``: the rule of
    :func:`lay2story_core.devices.pick_device`, with ComfyUI's device as the preferred one."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{field}: expected 'auto', 'cpu' or 'cuda', got {choice!r}")
    mm = _model_management() if choice != "cpu" else None
    preferred = torch.device(mm.get_torch_device()) if mm is not None else None
    return devices.pick_device(choice, preferred=preferred, field=field)


def resolve_dtype(choice: str, device: torch.device, field: str = "precision") -> torch.dtype:
    """``"auto"``: float32 on the CPU; on an accelerator bfloat16 where supported (ComfyUI decides when present),
    else float16. ``"fp32"``, ``"bf16"``, ``"fp16"`` as named (:func:`lay2story_core.devices.pick_dtype`)."""
    if choice not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"{field}: expected one of {('auto', 'fp32', 'bf16', 'fp16')}, got {choice!r}")
    mm = _model_management() if device.type != "cpu" else None
    bf16 = bool(mm.should_use_bf16(device)) if mm is not None and hasattr(mm, "should_use_bf16") else None
    return devices.pick_dtype(choice, device, bf16_supported=bf16, field=field)


def offload_device() -> torch.device:
    """Where idle text encoders wait (ComfyUI's text-encoder offload device, else the CPU)."""
    mm = _model_management()
    if mm is not None and hasattr(mm, "text_encoder_offload_device"):
        return torch.device(mm.text_encoder_offload_device())
    return torch.device("cpu")


def free_memory(num_bytes: int, device: torch.device) -> None:
    """Asks ComfyUI to unload its own models until ``num_bytes`` are free on ``device`` (nothing on the CPU)."""
    if device.type == "cpu":
        return
    mm = _model_management()
    if mm is not None and hasattr(mm, "free_memory"):
        mm.free_memory(int(num_bytes), device)


def soft_empty_cache() -> None:
    """Returns cached accelerator memory (ComfyUI's ``soft_empty_cache``, else ``torch.cuda.empty_cache``)."""
    mm = _model_management()
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def throw_if_interrupted() -> None:
    """Raises ComfyUI's interrupt exception when the user pressed Cancel (no-op without ComfyUI)."""
    mm = _model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


# ---------------------------------------------------------------------------------------------- progress, previews
class _NoProgress:
    def update_absolute(self, value: int, total: int | None = None, preview: object = None) -> None:
        return None


def progress_bar(total: int):
    """ComfyUI's ``ProgressBar`` (each update is also a Cancel point), else a stand-in that does nothing."""
    utils = _module("comfy.utils") if in_comfyui() else None
    return utils.ProgressBar(total) if utils is not None else _NoProgress()


def latent_previewer(device: torch.device, latent_format: object = None) -> Callable[[torch.Tensor], object] | None:
    """``latents (F, 4, h, w) -> preview`` for ``ProgressBar.update_absolute``, or None when previews are off.

    Uses ComfyUI's previewer for the model's latent format (``latent_format``: a ``MODEL``'s; default SD-VAE
    latents, PixArt-alpha's VAE): latent2rgb or TAESD as the user configured; the first frames side by side.
    """
    preview = _module("latent_preview") if in_comfyui() else None
    formats = _module("comfy.latent_formats") if preview is not None else None
    if preview is None or formats is None:
        return None
    try:
        previewer = preview.get_previewer(device, latent_format if latent_format is not None else formats.SD15())
    except Exception as err:  # a preview must never stop sampling
        logger.warning("latent previews unavailable: %s", err)
        return None
    if previewer is None:
        return None

    def render(latents: torch.Tensor):
        frames = latents[:PREVIEW_FRAMES].float()
        strip = torch.cat(list(frames), dim=-1)[None]  # (1, 4, h, n*w)
        return previewer.decode_latent_to_preview_image("JPEG", strip)

    return render


# ------------------------------------------------------------------------------------------------- saving files
def _fallback_save_path(prefix: str, root: str) -> tuple[str, str, int, str]:
    """ComfyUI's ``get_save_image_path`` numbering without ComfyUI: ``<root>/<subfolder>/<name>_<counter:05>_``."""
    norm = os.path.normpath(prefix)
    subfolder, name = os.path.dirname(norm), os.path.basename(norm)
    folder = os.path.abspath(os.path.join(root, subfolder))
    if os.path.commonpath((os.path.abspath(root), folder)) != os.path.abspath(root):
        raise ValueError(f"filename_prefix: {prefix!r} points outside the output folder")
    os.makedirs(folder, exist_ok=True)
    counters = [int(f[len(name) + 1:].split("_")[0]) for f in os.listdir(folder)
                if f.startswith(name + "_") and f[len(name) + 1:].split("_")[0].isdigit()]
    return folder, name, max(counters, default=0) + 1, subfolder


def save_path(prefix: str, width: int, height: int, temp: bool = False) -> tuple[str, str, int, str, str]:
    """``(folder, filename, counter, subfolder, type)`` for files named ``f"{filename}_{counter:05}_.ext"``: ComfyUI's
    ``folder_paths.get_save_image_path`` in its output folder (``type`` "output") or, with ``temp``, its temp folder
    ("temp", for previews); without ComfyUI the folders of the module docstring."""
    module = _folder_paths()
    if module is not None:
        root = module.get_temp_directory() if temp else module.get_output_directory()
        folder, filename, counter, subfolder, _ = module.get_save_image_path(prefix, root, width, height)
    else:
        root = os.path.join(tempfile.gettempdir(), "lay2story_ui") if temp else (
            os.environ.get(OUTPUT_DIR_ENV) or os.path.join(tempfile.gettempdir(), "lay2story_output"))
        folder, filename, counter, subfolder = _fallback_save_path(prefix, root)
    return folder, filename, counter, subfolder, "temp" if temp else "output"


def png_metadata(prompt: object = None, extra_pnginfo: object = None):
    """The workflow metadata ComfyUI's ``SaveImage`` writes into a PNG (the prompt and the UI workflow), unless
    ComfyUI runs with ``--disable-metadata``; None when there is nothing to write."""
    cli_args = _module("comfy.cli_args") if in_comfyui() else None
    if getattr(getattr(cli_args, "args", None), "disable_metadata", False):
        return None
    if prompt is None and not extra_pnginfo:
        return None
    import json

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info
