"""Exponential moving averages of the trained modules (one diffusers ``EMAModel`` per module).

A stage trains one module (``transformer`` in stage 1, ``subject_branch`` in stage 2) or, with stage 2's
``--train_transformer``, two. Each keeps its own ``EMAModel`` so it is saved and loaded as ``<name>_ema/`` in
``save_pretrained`` form, which the pipeline and the ComfyUI loader read like any other model folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["ModuleEMA"]


class ModuleEMA:
    """The EMAs of ``modules`` (name -> module). ``step`` follows the modules' current parameters, so it keeps
    working after ``accelerator.prepare`` moves or wraps the model (parameters are updated in place)."""

    def __init__(self, modules: Mapping[str, nn.Module], decay: float) -> None:
        from diffusers.training_utils import EMAModel

        self._modules = dict(modules)
        self._emas = {name: EMAModel(list(module.parameters()), decay=decay, model_cls=type(module),
                                     model_config=module.config)
                      for name, module in self._modules.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._modules)

    def _params(self, name: str) -> list[nn.Parameter]:
        return list(self._modules[name].parameters())

    def to(self, device: torch.device | str) -> ModuleEMA:
        for ema in self._emas.values():
            ema.to(device)
        return self

    def _each(self, method: str) -> None:
        for name, ema in self._emas.items():
            getattr(ema, method)(self._params(name))

    def step(self) -> None:
        self._each("step")

    def store(self) -> None:
        """Remember the live weights (before :meth:`copy_to`), to put back with :meth:`restore`."""
        self._each("store")

    def copy_to(self) -> None:
        self._each("copy_to")

    def restore(self) -> None:
        self._each("restore")

    def save_pretrained(self, folder: str, name: str) -> None:
        """Write ``name``'s average as ``<folder>/<name>_ema/``."""
        self._emas[name].save_pretrained(os.path.join(folder, f"{name}_ema"))

    def load(self, folder: str, name: str) -> None:
        """Read ``<folder>/<name>_ema/`` (a checkpoint's) back into ``name``'s average."""
        from diffusers.training_utils import EMAModel

        module = self._modules[name]
        state = EMAModel.from_pretrained(os.path.join(folder, f"{name}_ema"), type(module)).state_dict()
        self._emas[name].load_state_dict(state)
        self._emas[name].to(next(module.parameters()).device)
