"""The loaders' model choices: what ComfyUI's model folders hold, named ``"<folder kind>/<relative name>"``, and
the way back from a choice to a path. The embedded ShapeStory demo pipeline is offered when its folder exists.
"""

from __future__ import annotations

import json
import os

from lay2story_core.cli import EMBEDDED_MODEL

from . import comfy_env

__all__ = [
    "AUTO",
    "COMFY_T5_TOKENIZER",
    "EMBEDDED_LABEL",
    "NONE",
    "detector_choices",
    "embedded_pipeline_dir",
    "is_pipeline_folder",
    "model_choices",
    "path_size",
    "resolve_choice",
    "subject_branch_choices",
    "text_encoder_choices",
    "tokenizer_choices",
    "vae_choices",
]

EMBEDDED_LABEL = "[embedded] ShapeStory demo"
AUTO = "auto"
NONE = "none"
COMFY_T5_TOKENIZER = "[ComfyUI] bundled T5 tokenizer"
PIPELINE_KINDS = ("lay2story", "diffusers")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def embedded_pipeline_dir() -> str | None:
    """The embedded demo pipeline folder (``lay2story_core/assets/shapestory/pipeline``), when it exists."""
    path = os.fspath(EMBEDDED_MODEL)
    return path if is_pipeline_folder(path) else None


def _has_config(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def is_pipeline_folder(path: str, component: str = "transformer") -> bool:
    """A pipeline folder (diffusers / ``save_story_pipeline`` layout) with a ``<component>/config.json``."""
    return os.path.isdir(path) and _has_config(os.path.join(path, component))


def _class_name(path: str) -> str | None:
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data.get("_class_name") if isinstance(data, dict) else None


def _is_subject_branch(path: str) -> bool:
    return _class_name(path) == "SubjectBranch" or (
        is_pipeline_folder(path, "subject_branch") and _class_name(os.path.join(path, "subject_branch"))
        in (None, "SubjectBranch"))


def _has_tokenizer(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES)


def _pipelines(component: str) -> list[str]:
    return [f"{kind}/{name}" for kind in PIPELINE_KINDS
            for name in comfy_env.list_model_folders(kind, lambda p: is_pipeline_folder(p, component))]


def _embedded(component: str) -> list[str]:
    folder = embedded_pipeline_dir()
    return [EMBEDDED_LABEL] if folder is not None and is_pipeline_folder(folder, component) else []


# ------------------------------------------------------------------------------------------------------- the lists
def model_choices() -> list[str]:
    """PixArt transformers: the embedded demo, pipeline folders, and single files in checkpoints/diffusion_models."""
    files = [f"{kind}/{name}" for kind in ("checkpoints", "diffusion_models")
             for name in comfy_env.list_model_files(kind)]
    return _embedded("transformer") + _pipelines("transformer") + files


def subject_branch_choices() -> list[str]:
    """``auto`` (the model's pipeline folder's own branch), ``none`` (training-free), and folders in lay2story/."""
    folders = [f"lay2story/{name}" for name in comfy_env.list_model_folders("lay2story", _is_subject_branch)]
    return [AUTO, NONE, *folders]


def vae_choices() -> list[str]:
    """``auto`` (the pipeline folder's VAE) and the files and diffusers folders in vae/."""
    files = [f"vae/{name}" for name in comfy_env.list_model_files("vae")]
    folders = [f"vae/{name}" for name in comfy_env.list_model_folders("vae", _has_config)]
    return [AUTO, *folders, *files]


def text_encoder_choices() -> list[str]:
    """T5 encoders: the embedded demo's, pipeline folders', and files and folders in text_encoders (or clip)."""
    folders = [f"text_encoders/{name}" for name in comfy_env.list_model_folders("text_encoders", _has_config)]
    files = [f"text_encoders/{name}" for name in comfy_env.list_model_files("text_encoders")]
    return _embedded("text_encoder") + _pipelines("text_encoder") + folders + files


def tokenizer_choices() -> list[str]:
    """``auto``, ComfyUI's bundled T5 tokenizer (inside ComfyUI), and tokenizer folders in text_encoders."""
    bundled = [COMFY_T5_TOKENIZER] if comfy_env.comfy_t5_tokenizer_dir() else []
    folders = [f"text_encoders/{name}" for name in comfy_env.list_model_folders("text_encoders", _has_tokenizer)]
    return [AUTO, *bundled, *folders]


def detector_choices() -> list[str]:
    """Grounding DINO folders (transformers ``save_pretrained``) in grounding-dino/."""
    return comfy_env.list_model_folders("grounding-dino", _has_config)


# ------------------------------------------------------------------------------------------------- choice -> path
def resolve_choice(choice: object, field: str, default_kind: str | None = None) -> str:
    """The path behind a choice (``"<kind>/<name>"``, the embedded demo, or a bare name under ``default_kind``).

    Raises ``ValueError`` naming ``field`` when the choice is malformed or its file/folder is gone.
    """
    if not isinstance(choice, str) or not choice.strip():
        raise ValueError(f"{field}: expected a model name from the list, got {choice!r}")
    if choice == EMBEDDED_LABEL:
        folder = embedded_pipeline_dir()
        if folder is None:
            raise ValueError(f"{field}: the embedded ShapeStory demo model is not installed ({EMBEDDED_MODEL})")
        return folder
    kind, sep, name = choice.partition("/")
    if not sep and default_kind is not None:
        kind, name = default_kind, choice
    elif not sep:
        raise ValueError(f"{field}: expected '<folder>/<name>' from the list, got {choice!r}")
    if kind not in comfy_env.FALLBACK_SUBFOLDERS:
        raise ValueError(f"{field}: unknown model folder {kind!r} in {choice!r}")
    path = comfy_env.full_model_path(kind, name)
    if path is None:
        where = comfy_env.folder_paths_for(kind)
        hint = f" (searched {', '.join(where)})" if where else (
            f" (no model folders known: run inside ComfyUI or set {comfy_env.MODELS_DIR_ENV})")
        raise ValueError(f"{field}: {choice!r} not found{hint}; refresh the node's list")
    return path


def path_size(path: str) -> int:
    """Bytes of a file, or of every file below a folder (an estimate of the memory its weights need)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            if name.lower().endswith(comfy_env.WEIGHT_EXTENSIONS):
                total += os.path.getsize(os.path.join(dirpath, name))
    return total
