"""Load and save whole story pipelines: a folder with ``transformer/``, ``subject_branch/`` (optional), ``vae/``,
``text_encoder/``, ``tokenizer/`` and ``scheduler/`` (diffusers' layout), or single files per component."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import diffusers
import torch
from diffusers import DiffusionPipeline, SchedulerMixin

from ..loading import (
    ModelLoadError,
    ModelNotFoundError,
    PixArtCheckpointInfo,
    load_pixart_transformer_with_info,
    load_t5_encoder,
    load_t5_tokenizer,
    load_vae,
)
from ..loading.folder import load_diffusers_folder
from ..loading.modeling import resolve_dtype
from ..models import SubjectBranch
from ..text import DEFAULT_MAX_LENGTH
from .manifest import MANIFEST_FILE, PipelineManifest
from .story_pipeline import StoryPipeline, default_scheduler

logger = logging.getLogger(__name__)

SUBFOLDERS = ("transformer", "subject_branch", "vae", "text_encoder", "tokenizer", "scheduler")


def default_max_sequence_length(manifest: PipelineManifest, info: PixArtCheckpointInfo | None) -> int:
    """The caption length a loaded model samples with unless a call says otherwise, one rule for every loader
    (:func:`load_story_pipeline`, the nodes' model loader): the folder's ``lay2story.json``, else what the
    checkpoint tells (PixArt-Sigma 300, alpha 120: ``PixArtCheckpointInfo.max_text_tokens``), else alpha's 120."""
    if manifest.max_sequence_length is not None:
        return manifest.max_sequence_length
    if info is not None and info.max_text_tokens:
        return int(info.max_text_tokens)
    return DEFAULT_MAX_LENGTH


def load_subject_branch(path: str | os.PathLike, *, torch_dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> SubjectBranch:
    """A subject branch from its ``save_pretrained`` folder (``config.json`` + safetensors)."""
    folder = Path(path)
    if (folder / "subject_branch").is_dir():
        folder = folder / "subject_branch"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"subject branch: no config.json in {os.fspath(folder)!r} (expected a folder written "
                                 "by SubjectBranch.save_pretrained)")
    return load_diffusers_folder(SubjectBranch, folder, what="subject branch", dtype=resolve_dtype(torch_dtype),
                                 device=device)


def load_story_pipeline(
    model: str | os.PathLike,
    *,
    subject_branch: str | os.PathLike | torch.nn.Module | None = "auto",
    vae: str | os.PathLike | torch.nn.Module | None = None,
    text_encoder: str | os.PathLike | torch.nn.Module | None = None,
    tokenizer: str | os.PathLike | object | None = None,
    transformer: torch.nn.Module | None = None,
    scheduler: object | None = None,
    torch_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> StoryPipeline:
    """Build a :class:`StoryPipeline`.

    Args:
        model: a pipeline folder (with the subfolders above; ``model_index.json`` optional; its ``lay2story.json``
            gives the name, the sampling defaults and the caption length, see
            :mod:`~lay2story_core.pipelines.manifest`), or a PixArt transformer (folder, single file, hub id). The
            pipeline's :attr:`~StoryPipeline.max_sequence_length` is the model's (PixArt-Sigma 300, alpha 120:
            :func:`default_max_sequence_length`).
        subject_branch: ``"auto"`` (the pipeline folder's ``subject_branch/`` if present), a folder (or a folder
            holding ``subject_branch/``, as the trainer's ``output_dir``), a loaded module, or ``None``.
        vae, text_encoder, tokenizer: override or complete the components, as paths or loaded objects (required when
            ``model`` is not a pipeline folder).
        transformer, scheduler: loaded objects replacing the folder's (``scheduler=None``: the folder's
            ``scheduler/``, else DPM-Solver++).
    """
    root = Path(model)
    is_pipeline = root.is_dir() and (root / "transformer").is_dir()
    manifest = PipelineManifest.read(root) if is_pipeline else PipelineManifest()  # a bad one fails before loading
    kwargs = {"torch_dtype": torch_dtype, "device": device}

    def component(given, name: str, loader, **extra):
        if given is not None and not isinstance(given, (str, os.PathLike)):
            return given  # already loaded
        source = given if given is not None else (root if is_pipeline else None)
        if source is None:
            raise ModelNotFoundError(f"{name}: not found; {os.fspath(model)!r} is not a pipeline folder, pass {name}=")
        return loader(source, **extra)

    info = None
    if transformer is None:
        transformer, info = load_pixart_transformer_with_info(model, **kwargs)
    branch = None
    if isinstance(subject_branch, str) and subject_branch == "auto":
        if is_pipeline and (root / "subject_branch").is_dir():
            branch = load_subject_branch(root / "subject_branch", **kwargs)
    elif subject_branch is not None:
        branch = component(subject_branch, "subject_branch", load_subject_branch, **kwargs)
    if scheduler is None:
        scheduler = _load_scheduler(root / "scheduler") if is_pipeline else default_scheduler()
    pipe = StoryPipeline(
        tokenizer=component(tokenizer, "tokenizer", load_t5_tokenizer),
        text_encoder=component(text_encoder, "text_encoder", load_t5_encoder, **kwargs),
        vae=component(vae, "vae", load_vae, **kwargs),
        transformer=transformer,
        scheduler=scheduler,
        subject_branch=branch,
    )
    pipe.sampling_defaults, pipe.model_name = manifest.sampling, manifest.name
    pipe.trained_for, pipe.auto_layout = manifest.trained_for, manifest.auto_layout
    pipe.max_sequence_length = default_max_sequence_length(manifest, info)
    return pipe


def _load_scheduler(folder: Path):
    """The scheduler class named in ``scheduler_config.json`` (a diffusers scheduler), else the default."""
    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        return default_scheduler()
    try:
        name = json.loads(config_file.read_text(encoding="utf-8")).get("_class_name", "DPMSolverMultistepScheduler")
    except (OSError, ValueError, AttributeError) as err:
        raise ModelLoadError(config_file, f"unreadable scheduler config ({type(err).__name__}: {err})") from err
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ModelLoadError(config_file, f"_class_name {name!r} is not a diffusers scheduler")
    try:
        return cls.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(config_file, f"could not build the {name} ({type(err).__name__}: {err})") from err


PIPELINE_ENTRIES = (*SUBFOLDERS, "model_index.json", MANIFEST_FILE)


def write_manifest(pipe: StoryPipeline, folder: Path) -> Path:
    """``folder/lay2story.json`` for ``pipe`` saved there: its name, the component folders present, its sampling
    defaults, caption length and what it was trained for."""
    return PipelineManifest(name=pipe.model_name, components=tuple(n for n in SUBFOLDERS if (folder / n).is_dir()),
                            sampling=pipe.sampling_defaults, max_sequence_length=pipe.max_sequence_length,
                            trained_for=pipe.trained_for, auto_layout=pipe.auto_layout).write(folder)


def save_story_pipeline(pipe: StoryPipeline, folder: str | os.PathLike, **kwargs) -> None:
    """Write the pipeline as diffusers does (``model_index.json`` + one ``save_pretrained`` subfolder per
    component) plus ``lay2story.json``, readable by :func:`load_story_pipeline`, ``StoryPipeline.from_pretrained``
    and diffusers' own loader.

    Atomic: written into a staging folder beside ``folder`` and swapped in whole; an existing ``folder`` must hold a
    pipeline only (it is replaced), anything else is refused before writing.
    """
    folder = Path(os.path.abspath(os.fspath(folder)))
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"save_pretrained: {os.fspath(folder)!r} exists and is not a folder")
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in PIPELINE_ENTRIES)
        if foreign:
            raise ValueError(f"save_pretrained: {os.fspath(folder)!r} holds other files ({', '.join(foreign[:3])}); "
                             "it would be replaced as a whole, so give a new, empty or pipeline folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving-", dir=folder.parent))
    old = None
    try:
        DiffusionPipeline.save_pretrained(pipe, staging, **kwargs)
        write_manifest(pipe, staging)
        os.chmod(staging, 0o755)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old)
        os.replace(staging, folder)
    except BaseException:
        if old is not None and not folder.exists():
            os.replace(old, folder)
            old = None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
