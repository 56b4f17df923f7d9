"""``lay2story.json``: what a pipeline folder says about itself beyond diffusers' ``model_index.json``.

The manifest names the model, lists its components and carries the sampling settings its makers measured as best
(``"sampling": {"num_inference_steps": 16, "guidance_scale": 2.0}``). Those are the pipeline's defaults: a call,
the CLI or the bench that does not choose steps or a guidance scale gets them; one that does always wins. A folder
without a manifest, or a manifest without ``"sampling"``, samples with PixArt-alpha's settings (25 steps, CFG 4.5).
``"max_sequence_length"`` is the caption length in T5 tokens the model was trained with (120 PixArt-alpha, 300
PixArt-Sigma), likewise a default a caller may override; without it the loader asks the checkpoint.
``"trained_for"`` declares the frame size and vocabulary the model was trained for (:mod:`.trained_for`): a story
asking for others gets one warning line; without it, none. ``"auto_layout"`` turns auto layout on for the folder's
users (:mod:`.auto_layout`: with layout off the model places each character and the subject branch draws it there),
with its settings (``{}``: the defaults); without it, a call asks for it with ``auto_layout=True``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..loading import ModelLoadError
from .auto_layout import AutoLayout
from .trained_for import TrainedFor

__all__ = ["MANIFEST_FILE", "MAX_INFERENCE_STEPS", "MAX_SEQUENCE_LENGTH", "PipelineManifest", "SamplingDefaults",
           "check_guidance_scale", "check_max_sequence_length", "check_num_inference_steps"]

MANIFEST_FILE = "lay2story.json"
FORMAT = "lay2story-pipeline"
VERSION = 1
MAX_INFERENCE_STEPS = 1000  # a scheduler trained on fewer timesteps lowers it (``check_inputs``)
MAX_SEQUENCE_LENGTH = 1024  # T5 tokens; PixArt trains with 120 (alpha) or 300 (Sigma)


def check_guidance_scale(value: object, field: str = "guidance_scale") -> float:
    """The one rule for a classifier-free guidance scale (pipeline, CLI, nodes, manifests): a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{field}: expected a finite number >= 0 (1 or less: no guidance), got {value!r}")
    return float(value)


def check_num_inference_steps(value: object, field: str = "num_inference_steps", limit: int = MAX_INFERENCE_STEPS,
                              why: str = "") -> int:
    """The one rule for a number of denoising steps (pipeline, CLI, nodes, manifests): an integer in 1..``limit``
    (``why`` says where a lower limit comes from, e.g. the scheduler's training timesteps)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{field}: expected an integer in 1..{limit}{why}, got {value!r}")
    return value


def check_max_sequence_length(value: object, field: str = "max_sequence_length") -> int:
    """The one rule for a caption length in T5 tokens (pipeline, CLI, manifests): an integer in
    1..:data:`MAX_SEQUENCE_LENGTH`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEQUENCE_LENGTH:
        raise ValueError(f"{field}: expected an integer in 1..{MAX_SEQUENCE_LENGTH} (T5 tokens; PixArt-alpha 120, "
                         f"PixArt-Sigma 300), got {value!r}")
    return value


def _check_sampling(steps: object, cfg: object, where: str) -> None:
    check_num_inference_steps(steps, f"{where}.num_inference_steps")
    check_guidance_scale(cfg, f"{where}.guidance_scale")


@dataclass(frozen=True)
class SamplingDefaults:
    """Steps and classifier-free guidance scale used when a caller gives none (PixArt-alpha's by default)."""

    num_inference_steps: int = 25
    guidance_scale: float = 4.5

    def __post_init__(self) -> None:
        _check_sampling(self.num_inference_steps, self.guidance_scale, "sampling")

    @classmethod
    def from_dict(cls, data: object, where: str = "sampling") -> SamplingDefaults:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"num_inference_steps", "guidance_scale"})
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected num_inference_steps, guidance_scale)")
        default = cls()
        steps = data.get("num_inference_steps", default.num_inference_steps)
        cfg = data.get("guidance_scale", default.guidance_scale)
        _check_sampling(steps, cfg, where)
        return cls(steps, float(cfg))

    def to_dict(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale}

    def resolve(self, num_inference_steps: int | None, guidance_scale: float | None) -> tuple[int, float]:
        """The caller's values where given, these defaults elsewhere (not checked here: ``check_inputs`` does)."""
        return (self.num_inference_steps if num_inference_steps is None else num_inference_steps,
                self.guidance_scale if guidance_scale is None else guidance_scale)


@dataclass(frozen=True)
class PipelineManifest:
    """The parsed ``lay2story.json`` of a pipeline folder."""

    name: str | None = None
    components: tuple[str, ...] = ()
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    max_sequence_length: int | None = None  # None: not recorded (the loader asks the checkpoint)
    trained_for: TrainedFor | None = None  # None: no declaration (no warning)
    auto_layout: AutoLayout | None = None  # None: off unless a call asks for it

    def to_dict(self) -> dict:
        data: dict = {"format": FORMAT, "version": VERSION}
        if self.name:
            data["name"] = self.name
        if self.components:
            data["components"] = list(self.components)
        if self.sampling != SamplingDefaults():
            data["sampling"] = self.sampling.to_dict()
        if self.max_sequence_length is not None:
            data["max_sequence_length"] = self.max_sequence_length
        if self.trained_for is not None:
            data["trained_for"] = self.trained_for.to_dict()
        if self.auto_layout is not None:
            data["auto_layout"] = self.auto_layout.to_dict()
        return data

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike) -> PipelineManifest:
        """The folder's manifest; the default one when it has none. A manifest that is there but wrong raises
        :class:`ModelLoadError` naming the file and the field."""
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelLoadError(path, f"unreadable manifest ({type(err).__name__}: {err})") from err
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"format: expected {FORMAT!r}, got "
                                 f"{data.get('format') if isinstance(data, dict) else data!r}")
            if data.get("version") != VERSION:
                raise ValueError(f"version: expected {VERSION}, got {data.get('version')!r}")
            name = data.get("name")
            if name is not None and not isinstance(name, str):
                raise ValueError(f"name: expected a string, got {name!r}")
            components = data.get("components", [])
            if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
                raise ValueError(f"components: expected a list of folder names, got {components!r}")
            sampling = SamplingDefaults.from_dict(data.get("sampling", {}))
            tokens = data.get("max_sequence_length")
            if tokens is not None:
                check_max_sequence_length(tokens)
            trained_for = None if data.get("trained_for") is None else TrainedFor.from_dict(data["trained_for"])
            auto_layout = None if data.get("auto_layout") is None else AutoLayout.from_dict(data["auto_layout"])
        except ValueError as err:
            raise ModelLoadError(path, str(err)) from err
        return cls(name=name, components=tuple(components), sampling=sampling, max_sequence_length=tokens,
                   trained_for=trained_for, auto_layout=auto_layout)
