"""Atomic, resumable checkpoints and the ``save_pretrained`` export of the trained part.

A checkpoint ``output_dir/checkpoint-<step>/`` holds:

- accelerate's state (optimizer, lr scheduler, grad scaler; the model under FSDP);
- ``subject_branch/`` (stage 2) or ``transformer/`` (stage 1; also stage 2's with ``--train_transformer``): each
  trained part in diffusers ``save_pretrained`` form (the ComfyUI loader reads ``subject_branch/`` directly), and
  ``<name>_ema/`` with ``--use_ema``;
- ``training_state.json`` (step, epoch, position in the epoch, counters) and ``rng_state_<rank>.safetensors`` (the
  step generator of each rank), so resuming continues exactly: same data order, optimizer, scheduler and noise.

It is written to ``.checkpoint-<step>.tmp`` and renamed when complete, so a killed run leaves either a whole
checkpoint or none (a stale ``.tmp`` folder is ignored and removed on the next save). Everything is loaded with
safetensors, JSON or accelerate's ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file

from .config import ConfigError
from .feature_cache import write_json_atomic
from .modeling import TRAINABLE_PARTS

__all__ = ["TrainState", "find_checkpoints", "load_checkpoint", "prune_checkpoints", "register_hooks",
           "resolve_resume", "save_checkpoint"]

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


@dataclass
class TrainState:
    """Where a run is. ``batch_in_epoch`` counts this rank's batches taken from the current epoch (or stream)."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    stories_seen: int = 0
    frames_seen: int = 0
    skipped: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})


def find_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints of ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _NAME.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """``"latest"`` -> the newest complete checkpoint (``None`` if there is none: a fresh start); a path -> itself."""
    if resume is None:
        return None
    if resume == "latest":
        found = find_checkpoints(output_dir)
        if not found:
            logger.info("resume_from_checkpoint=latest: no checkpoint in %s, starting from scratch", output_dir)
            return None
        return found[-1][1]
    if not os.path.isfile(os.path.join(resume, STATE_FILE)):
        raise ValueError(f"resume_from_checkpoint: {resume!r} is not a complete checkpoint (no {STATE_FILE})")
    return resume


def prune_checkpoints(output_dir: str, limit: int | None, room: int = 0) -> list[str]:
    """Delete the oldest checkpoints so at most ``limit - room`` remain; also stale ``.tmp`` folders."""
    removed = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else ():
        if name.startswith(f".{PREFIX}") and name.endswith(".tmp"):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    if limit is None:
        return removed
    found = find_checkpoints(output_dir)
    excess = len(found) - max(limit - room, 0)
    for _, path in found[:max(excess, 0)]:
        shutil.rmtree(path)
        removed.append(path)
    if removed:
        logger.info("checkpoints_total_limit=%d: removed %s", limit, ", ".join(map(os.path.basename, removed)))
    return removed


def _is_fsdp(accelerator) -> bool:
    return str(accelerator.distributed_type).endswith("FSDP")


def export_trained(accelerator, model, names: tuple[str, ...], folder: str, ema=None) -> None:
    """Write each trained part ``names`` as ``<folder>/<name>/`` (and ``<name>_ema/``) in ``save_pretrained`` form.

    Under FSDP the full state dict is gathered (a collective: every rank must call this) and rebuilt on the main
    process. Otherwise only the main process writes.
    """
    unwrapped = accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model) if _is_fsdp(accelerator) else None
    for name in names:
        module = getattr(unwrapped, name)
        if state is not None:
            if accelerator.is_main_process:
                prefix = f"{name}."
                fresh = type(module).from_config(module.config)
                fresh.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
                fresh.save_pretrained(os.path.join(folder, name))
        elif accelerator.is_main_process:
            module.save_pretrained(os.path.join(folder, name))
        if ema is not None and accelerator.is_main_process:
            ema.save_pretrained(folder, name)


def register_hooks(accelerator, names: tuple[str, ...], ema=None) -> None:
    """diffusers-style save/load hooks: the trained parts go to the checkpoint in ``save_pretrained`` form instead
    of accelerate's whole-model file (so a stage-2 checkpoint does not repeat the frozen global branch)."""
    if _is_fsdp(accelerator):
        return  # accelerate saves the sharded model; export_trained writes the save_pretrained copy

    def save_hook(models, weights, output_dir):
        for model in models:
            export_trained(accelerator, model, names, output_dir, ema)
        weights.clear()

    def load_hook(models, input_dir):
        # every part this run trains must be there (a run with other --train_transformer / --use_ema wrote others)
        wanted = [*names, *(f"{name}_ema" for name in names if ema is not None)]
        missing = [part for part in wanted if not os.path.isdir(os.path.join(input_dir, part))]
        if missing:
            raise ConfigError(f"resume_from_checkpoint: {input_dir!r} has no {', '.join(p + '/' for p in missing)} "
                              "(written by a run with other --train_transformer / --use_ema settings?)")
        extra = [part for part in TRAINABLE_PARTS
                 if part not in names and os.path.isdir(os.path.join(input_dir, part))]
        if extra:
            raise ConfigError(f"resume_from_checkpoint: {input_dir!r} also trained {', '.join(extra)} (its optimizer "
                              "state holds them): resume with the settings that wrote it, e.g. --train_transformer")
        while models:
            unwrapped = accelerator.unwrap_model(models.pop())
            for name in names:
                module = getattr(unwrapped, name)
                loaded = type(module).from_pretrained(os.path.join(input_dir, name), torch_dtype=torch.float32)
                module.load_state_dict(loaded.state_dict())
                if ema is not None:
                    ema.load(input_dir, name)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator, output_dir: str, state: TrainState, generator: torch.Generator,
                    limit: int | None = None, *, model=None, names: tuple[str, ...] = ()) -> str:
    """Save a complete checkpoint atomically (every rank must call this) and apply ``limit``. Under FSDP, ``model``
    and ``names`` add the ``save_pretrained`` copy of the trained parts (elsewhere the save hook writes it)."""
    final = os.path.join(output_dir, f"{PREFIX}{state.global_step}")
    tmp = os.path.join(output_dir, f".{PREFIX}{state.global_step}.tmp")
    if accelerator.is_main_process:
        prune_checkpoints(output_dir, limit, room=1)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if model is not None and _is_fsdp(accelerator):
        export_trained(accelerator, model, names, tmp)
    rng = {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["torch_cuda"] = torch.cuda.get_rng_state()
    save_file(rng, os.path.join(tmp, f"rng_state_{accelerator.process_index}.safetensors"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(os.path.join(tmp, STATE_FILE), {**state.to_dict(), "num_processes":
                                                          accelerator.num_processes})
        if os.path.exists(final):  # re-saving a step (resumed run): replace it whole
            trash = f"{tmp}.old"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str, generator: torch.Generator) -> TrainState:
    """Restore accelerate's state, the trained weights (hooks), the step generator and the run position."""
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as handle:
        data = json.load(handle)
    saved = int(data.get("num_processes", accelerator.num_processes))
    if saved != accelerator.num_processes:
        logger.warning("checkpoint %s was written by %d processes, resuming with %d: the data order changes", path,
                       saved, accelerator.num_processes)
    accelerator.load_state(path)
    rng_file = os.path.join(path, f"rng_state_{accelerator.process_index}.safetensors")
    if os.path.isfile(rng_file):
        rng = load_file(rng_file)
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["torch_cuda"])
    else:
        logger.warning("%s has no RNG state for rank %d: noise differs from an uninterrupted run", path,
                       accelerator.process_index)
    state = TrainState.from_dict(data)
    logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, state.global_step, state.epoch,
                state.batch_in_epoch)
    return state
