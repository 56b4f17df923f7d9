"""Errors raised by the weight loaders.

Every loader failure is a :class:`ModelLoadError` (a ``ValueError``) whose message names the file, folder or hub id
it was given, so a ComfyUI user reading it knows which file to fix. Subclasses tell the cases apart for callers that
care (nodes may, for example, suggest a different folder for a wrong-architecture file).
"""

from __future__ import annotations

import re

__all__ = [
    "CorruptFileError",
    "HubUnavailableError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ShapeMismatchError",
    "StateDictKeysError",
    "UnsupportedFormatError",
    "WrongArchitectureError",
]


class ModelLoadError(ValueError):
    """A model, tokenizer or state dict could not be loaded.

    ``ModelLoadError(source, detail)`` reads ``"<source>: <detail>"``; ``source`` is the path or hub id given.
    ``ModelLoadError(message)`` (one argument) is accepted too, for callers that compose the whole message.
    """

    def __init__(self, source: object, detail: str | None = None) -> None:
        if detail is None:
            super().__init__(source)
            self.source, self.detail = "", str(source)
        else:
            super().__init__(source, detail)
            self.source, self.detail = str(source), detail

    def __str__(self) -> str:
        text = f"{self.source}: {self.detail}" if self.source else self.detail
        return re.sub(r"\s*\n\s*", " ", text.strip())  # one line, whatever a library's message looked like


class ModelNotFoundError(ModelLoadError):
    """The file or folder does not exist, or a folder lacks the files a model needs."""


class CorruptFileError(ModelLoadError):
    """The file exists but cannot be read: truncated download, not a weights file, unsafe pickle."""


class UnsupportedFormatError(ModelLoadError):
    """A file type or model variant these loaders do not handle (GGUF, qk-norm PixArt, UMT5, ...)."""


class WrongArchitectureError(ModelLoadError):
    """The weights belong to another kind of model (an SDXL UNet given as a PixArt transformer, ...)."""


class StateDictKeysError(ModelLoadError):
    """The weights miss keys the model needs, or carry keys it lacks; listed in ``missing`` and ``unexpected``."""

    def __init__(self, source: object, detail: str, missing: list[str], unexpected: list[str]) -> None:
        super().__init__(source, detail)
        self.args = (source, detail, missing, unexpected)
        self.missing = missing
        self.unexpected = unexpected


class ShapeMismatchError(ModelLoadError):
    """A tensor's shape differs from what the model (as configured) expects; names the first such key."""

    def __init__(self, source: object, detail: str, key: str, expected: tuple, found: tuple) -> None:
        super().__init__(source, detail)
        self.args = (source, detail, key, expected, found)
        self.key = key
        self.expected = tuple(expected)
        self.found = tuple(found)


class HubUnavailableError(ModelLoadError):
    """A Hugging Face hub id was given (no such local path) and fetching it failed, typically because offline."""
