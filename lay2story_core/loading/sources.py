"""Where weights come from: a single file, a diffusers/transformers model folder, a pipeline folder, or a hub id.

The hub is only asked when the caller passes something that is not a local path and looks like ``org/name``;
failures there (offline, no such repo) become :class:`HubUnavailableError` with the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import HubUnavailableError, ModelLoadError, ModelNotFoundError

__all__ = ["Source", "call_hub", "from_hub_repo", "hub_offline", "resolve_source"]

T = TypeVar("T")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Source:
    """A resolved weights location.

    ``kind`` is ``"file"``, ``"folder"`` (a model folder with ``config.json``) or ``"hub"``. For ``"folder"``,
    ``path`` is the model folder itself (a pipeline's component subfolder already joined); ``pipeline`` is the
    pipeline folder it came from, if any. For ``"hub"``, ``path`` is the id and ``subfolder`` the requested one.
    """

    kind: str
    path: str
    subfolder: str | None = None
    pipeline: str | None = None


def resolve_source(path_or_id: str | os.PathLike, component: str, subfolder: str | None = None) -> Source:
    """Resolve a user-given path or hub id for one pipeline component (``"transformer"``, ``"vae"``, ...).

    A folder with ``config.json`` is a model folder (``subfolder`` is joined first when given); a folder with
    ``model_index.json`` or a ``<component>/`` subfolder is a pipeline folder whose ``<subfolder or component>/``
    is used.
    """
    if path_or_id is None or (isinstance(path_or_id, str) and not path_or_id.strip()):
        raise ModelNotFoundError(repr(path_or_id), f"no path given for the {component}")
    raw = os.fspath(path_or_id)
    path = Path(raw).expanduser()
    if path.is_file():
        return Source("file", str(path))
    if path.is_dir():
        return _resolve_folder(path, component, subfolder)
    if _HUB_ID.match(raw) and not raw.startswith((".", "~")) and Path(raw).suffix.lower() not in _FILE_SUFFIXES:
        return Source("hub", raw, subfolder)
    parent = path.parent
    hint = "" if parent.is_dir() else f" (the folder {parent} does not exist either)"
    raise ModelNotFoundError(path, f"no such file or folder{hint}")


_FILE_SUFFIXES = {".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt", ".json", ".model", ".gguf"}


def _resolve_folder(path: Path, component: str, subfolder: str | None) -> Source:
    if subfolder:
        inner = path / subfolder
        if not inner.is_dir():
            raise ModelNotFoundError(path, f"has no subfolder {subfolder!r}")
        if not (inner / "config.json").is_file():
            raise ModelNotFoundError(inner, "has no config.json, so it is not a diffusers/transformers model folder")
        return Source("folder", str(inner), pipeline=str(path) if (path / "model_index.json").is_file() else None)
    if (path / "config.json").is_file():
        return Source("folder", str(path))
    inner = path / component
    if (path / "model_index.json").is_file() or inner.is_dir():
        if not (inner / "config.json").is_file():
            raise ModelNotFoundError(
                path,
                f"looks like a pipeline folder but has no {component}/config.json "
                "(pass subfolder= if the component folder has another name)",
            )
        return Source("folder", str(inner), pipeline=str(path))
    weights = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _FILE_SUFFIXES - {".json", ".model"})
    hint = f"; it holds {', '.join(weights[:4])}: pass that file instead" if weights else ""
    raise ModelNotFoundError(
        path, f"is neither a model folder (no config.json) nor a pipeline folder (no {component}/ subfolder){hint}"
    )


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE=1``)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers/transformers
        return False
    checker = getattr(constants, "is_offline_mode", None)
    return bool(checker() if callable(checker) else getattr(constants, "HF_HUB_OFFLINE", False))


def call_hub(hub_id: str, what: str, fn: Callable[[], T]) -> T:
    """Run a hub-backed ``from_pretrained``; turn its failure into a :class:`HubUnavailableError` saying why."""
    try:
        return fn()
    except ModelLoadError:
        raise
    except Exception as err:  # hub, HTTP and OS errors come in many types; all mean "could not fetch"
        reason = (
            "offline mode is on (HF_HUB_OFFLINE=1), and it is not in the local hub cache"
            if hub_offline()
            else "the hub could not be reached or has no such repository/files"
        )
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise HubUnavailableError(
            hub_id,
            f"is not a local file or folder, so it was tried as a Hugging Face hub id for the {what}; that failed: "
            f"{reason}. Give a local path instead. ({type(err).__name__}: {first_line})",
        ) from err


def from_hub_repo(source: Source, component: str, what: str, load: Callable[[str | None], T]) -> T:
    """``load(subfolder)`` for a hub id: the given subfolder, else ``<component>/`` (pipeline repos), else the root."""
    if source.subfolder is not None:
        return call_hub(source.path, what, lambda: load(source.subfolder))

    def attempt() -> T:
        try:
            return load(component)
        except OSError:  # no such subfolder: a bare model repo keeps config.json at its root
            return load(None)

    return call_hub(source.path, what, attempt)
