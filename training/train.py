"""Train Lay2Story: stage 1 fine-tunes the PixArt-alpha global branch; stage 2 freezes it, trains the subject branch.

Run (options can live in a YAML file whose keys are the option names; the command line overrides it)::

    # CPU (tests, smoke runs): a tiny random model and a synthetic story set
    python -m training.tiny_assets --out runs/tiny_assets
    python training/train.py --config training/configs/tiny_cpu.yaml

    # one GPU, or several (DDP): the paper's two stages
    accelerate launch training/train.py --config training/configs/stage1.yaml
    accelerate launch --multi_gpu --num_processes 8 training/train.py --config training/configs/stage2.yaml

    # several processes on a CPU-only machine (gloo data parallel, e.g. one per core)
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 training/train.py --config <config>

    # several nodes (run on each node; output_dir on a shared filesystem)
    accelerate launch --multi_gpu --num_machines 2 --machine_rank $RANK --main_process_ip $MASTER \\
        --main_process_port 29500 --num_processes 16 training/train.py --config training/configs/stage2.yaml

    # FSDP, when the trained model does not fit one GPU with its optimizer state
    accelerate launch --config_file training/configs/accelerate_fsdp.yaml training/train.py \\
        --config training/configs/stage1.yaml

    # optional: precompute T5 and VAE features once, then train without T5 in memory
    python training/cache.py --config training/configs/stage2.yaml
    accelerate launch training/train.py --config training/configs/stage2.yaml --feature_cache <folder>

    # resume after a crash (continues exactly where the last checkpoint left off)
    accelerate launch training/train.py --config training/configs/stage2.yaml --resume_from_checkpoint latest

    # stage 2 as a joint fine-tune: the global branch trains too, at its own learning rate
    accelerate launch training/train.py --config training/configs/stage2.yaml --train_transformer \
        --transformer_learning_rate 1e-5

The trained part is exported as ``<output_dir>/subject_branch/`` (stage 2; what the ComfyUI loader reads from
``models/lay2story``) or ``<output_dir>/transformer/`` (stage 1, and stage 2 with ``--train_transformer``, which
fine-tunes the global branch jointly), plus ``*_ema/`` with ``--use_ema``. Structure after
diffusers' ``examples/`` and DiT's ``train.py``: accelerate, save/load state hooks, ``--checkpoints_total_limit``,
``--resume_from_checkpoint latest``, validation every ``--validation_steps``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root replaces training/ on sys.path
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from training.buckets import BucketTable
from training.checkpointing import (
    TrainState,
    export_trained,
    load_checkpoint,
    register_hooks,
    resolve_resume,
    save_checkpoint,
)
from training.config import ConfigError
from training.config import parse_args as _parse_args
from training.dataset import TrainingDataError
from training.ema import ModuleEMA
from training.features import CaptionEncoder, DropoutConfig, compute_loss, prepare_inputs
from training.loop_data import SkipTracker, build_loader, describe_data, open_cache, validation_in_cache
from training.losses import GaussianDiffusion
from training.modeling import Components, VaeInfo, load_components, trainable_name, trained_names
from training.validation import render_validation_stories, validation_loss

__all__ = ["main", "parse_args"]

logger = logging.getLogger(__name__)

StepCallback = Callable[[TrainState, dict], None]


def parse_args(argv: Sequence[str] | None = None):
    """The trainer's options (see ``--help``); ``--config`` YAML values are overridden by the command line."""
    return _parse_args(argv)


def _launched_without_accelerator_device() -> bool:
    """True when a launcher (torchrun, ``accelerate launch``, mpirun) started several processes on a machine
    without a GPU: accelerate then needs ``cpu=True`` to join them with gloo, otherwise every process would train
    alone and all of them write the same output_dir."""
    world = max(int(os.environ.get(name, "1") or 1) for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return world > 1 and not has_device


def _accelerator(args):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    project = ProjectConfiguration(project_dir=args.output_dir,
                                   logging_dir=os.path.join(args.output_dir, args.logging_dir))
    report_to = None if args.report_to in (None, "none") else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=project,
        cpu=_launched_without_accelerator_device(),  # multi-process CPU training (gloo): data parallel on cores
        # stage 2: a batch whose stories are all unconditional does not use the subject branch
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=args.stage == 2)],
    )
    if str(accelerator.distributed_type).endswith("FSDP") and args.use_ema:
        raise ConfigError("use_ema: not supported with FSDP (the EMA would hold shards); turn one off")
    return accelerator


def _tracker_config(args) -> dict:
    """Hyper-parameters for trackers (tensorboard takes scalars and strings only)."""
    out = {}
    for key, value in vars(args).items():
        if key.startswith("_"):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def _optimizer(args, model, accelerator, max_train_steps: int):
    from diffusers.optimization import get_scheduler

    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(
        "transformer.")]}]
    if args.stage == 1 or args.train_transformer:  # stage 1 trains only the global branch: one group either way
        groups.append({"params": [p for p in model.transformer.parameters() if p.requires_grad],
                       "lr": args.transformer_learning_rate or args.learning_rate})
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    # accelerate steps a prepared scheduler once per process per optimizer step (diffusers' convention)
    scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                              num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                              num_training_steps=max_train_steps * accelerator.num_processes)
    return optimizer, scheduler


def _ema(args, components: Components, parts: tuple[str, ...]) -> ModuleEMA | None:
    if not args.use_ema:
        return None
    return ModuleEMA({name: getattr(components.model, name) for name in parts}, args.ema_decay)


def _export_final(accelerator, model, args, parts: tuple[str, ...], ema) -> str:
    """Export the trained parts to ``output_dir/<name>/`` atomically (a temporary folder, then renames); the stage's
    own part's folder is returned."""
    tmp = os.path.join(args.output_dir, ".export.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    export_trained(accelerator, model, parts, tmp, ema)
    if accelerator.is_main_process:
        for name in sorted(os.listdir(tmp)):
            final = os.path.join(args.output_dir, name)
            if os.path.exists(final):
                os.replace(final, f"{tmp}.{name}.old")
            os.replace(os.path.join(tmp, name), final)
            shutil.rmtree(f"{tmp}.{name}.old", ignore_errors=True)
        os.rmdir(tmp)
    accelerator.wait_for_everyone()
    return os.path.join(args.output_dir, trainable_name(args.stage))


def _check_prediction_type(args) -> None:
    """The model's scheduler config tells inference what the model predicts: training must agree with it."""
    import json

    root = args.pretrained_model_name_or_path
    config = os.path.join(root, "scheduler", "scheduler_config.json") if root else None
    if config and os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            wanted = json.load(f).get("prediction_type", "epsilon")
        if wanted != args.prediction_type:
            raise ConfigError(f"prediction_type: {args.prediction_type!r}, but {config} says {wanted!r} (inference "
                              "reads the scheduler config); set --prediction_type " + wanted)


def _any_rank(accelerator, flag: bool) -> bool:
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum").item() > 0)


def main(args, *, on_step: StepCallback | None = None) -> dict:
    """Train with ``args`` (from :func:`parse_args`). ``on_step(state, logs)`` is called after every optimizer step.

    Returns a summary: ``global_step``, ``loss_history`` (per step, averaged over ranks), ``skipped`` (stories skipped
    on this rank), ``output`` (the exported folder) and ``checkpoint`` (the last one written).
    """
    from accelerate.utils import set_seed

    # 0. Fail early: data sources, cache settings (no model is loaded yet)
    accelerator = _accelerator(args)
    files, kind = describe_data(args.train_data, "train_data")
    if kind == "tar" and args.max_train_steps is None:
        raise ConfigError("max_train_steps: required when streaming tar shards (the stream has no epochs)")
    cache = open_cache(args)
    _check_prediction_type(args)
    set_seed(args.seed)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    device = accelerator.device

    # 1. Models: the stage's model (trained part float32), T5 and VAE unless their features are cached
    val_cached = validation_in_cache(args, cache)
    need_live = cache is None or bool(args.validation_stories) or bool(args.validation_data and not val_cached)
    vae_info = VaeInfo(**cache.meta["vae"]) if cache is not None else None
    components = load_components(args, device, accelerator.mixed_precision, need_text=need_live, need_vae=need_live,
                                 vae_info=vae_info, fsdp=str(accelerator.distributed_type).endswith("FSDP"))
    model = components.model
    table = BucketTable(args.resolution, components.vae_info.scale_factor * components.patch_size,
                        enabled=args.aspect_ratio_buckets)
    if cache is not None and cache.meta.get("bucket_multiple") != table.multiple:
        raise ConfigError(f"feature_cache: bucket sizes are multiples of {cache.meta.get('bucket_multiple')} in the "
                          f"cache but {table.multiple} for this model; re-run training/cache.py")

    # 2. Data
    loader, sampler, batches_per_epoch = build_loader(args, files, kind, table, cache, accelerator)
    steps_per_epoch = max(batches_per_epoch // args.gradient_accumulation_steps, 1) if batches_per_epoch else None
    if batches_per_epoch == 0:
        raise ConfigError(f"train_data: no complete batch of {args.train_batch_size} same-bucket stories for "
                          f"{accelerator.num_processes} process(es) x {args.gradient_accumulation_steps} "
                          "accumulation steps; add data or lower train_batch_size")
    max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    # epochs end the run too (as diffusers' examples), so batches skipped as unreadable shorten it, not stretch it
    num_epochs = math.ceil(max_train_steps / steps_per_epoch) if steps_per_epoch else None

    # 3. Optimizer, scheduler, EMA, hooks, accelerate
    optimizer, lr_scheduler = _optimizer(args, model, accelerator, max_train_steps)
    parts = trained_names(args.stage, args.train_transformer)
    ema = _ema(args, components, parts)
    register_hooks(accelerator, parts, ema)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(device)
    trained_params = [p for p in model.parameters() if p.requires_grad]
    diffusion = GaussianDiffusion(args.num_timesteps, learn_sigma=components.model.transformer.out_channels ==
                                  2 * components.vae_info.latent_channels, prediction_type=args.prediction_type)
    live = None if components.text_encoder is None else CaptionEncoder(
        args.max_length, tokenizer=components.tokenizer, text_encoder=components.text_encoder)
    cached = None if cache is None else CaptionEncoder(args.max_length, empty_states=cache.empty_text)
    captions = cached or live
    validation = _Validation(cache if val_cached else None, cached if val_cached else live)
    dropout = DropoutConfig(args.caption_dropout, args.mask_dropout, args.subject_caption_dropout,
                            args.reference_dropout, args.branch_off_share)
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=_tracker_config(args))

    # 4. Resume
    generator = torch.Generator().manual_seed(args.seed * 1009 + accelerator.process_index)
    state = TrainState()
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    checkpoint = None
    if resume is not None:
        state = load_checkpoint(accelerator, resume, generator)
        checkpoint = resume
    logger.info("training stage %d for %d steps (%s batches/epoch per process, %d process(es), accumulation %d)",
                args.stage, max_train_steps, batches_per_epoch or "streaming", accelerator.num_processes,
                args.gradient_accumulation_steps)

    # 5. Train (unreadable stories are skipped, up to max_skip_fraction of those read)
    skips = SkipTracker(args.max_skip_fraction)
    index = getattr(loader.dataset, "index", None)
    if index is not None and index.invalid and accelerator.is_main_process:  # invalid JSONL lines, counted once
        skips.read, skips.skipped = skips.read + index.invalid, skips.skipped + index.invalid
        skips.add_bad(index.bad)
    history: list[float] = []
    step_losses: list[torch.Tensor] = []
    step_stories = step_frames = 0
    last_time = time.perf_counter()
    use_added = components.model.transformer.use_additional_conditions
    while state.global_step < max_train_steps and (num_epochs is None or state.epoch < num_epochs):
        if sampler is not None:
            sampler.set_epoch(state.epoch, start=state.batch_in_epoch)
        else:
            loader.dataset.start = state.batch_in_epoch
        for batch in loader:
            state.batch_in_epoch += 1
            state.skipped += batch.skipped
            skips.add(batch)
            read, skipped = _totals(accelerator, skips)
            if skips.exceeded(read, skipped):
                raise skips.error(read, skipped)
            if _any_rank(accelerator, not batch.examples):  # every rank skips together (DDP stays in step)
                logger.warning("skipping a batch whose stories could not be loaded (%d skipped so far)",
                               state.skipped)
                continue
            with accelerator.accumulate(model):
                inputs = prepare_inputs(batch, stage=args.stage, captions=captions, vae=components.vae,
                                        vae_info=components.vae_info, diffusion=diffusion, generator=generator,
                                        dropout=dropout, patch_size=components.patch_size, device=device,
                                        use_additional_conditions=use_added,
                                        subject_loss_weight=args.subject_loss_weight,
                                        outline_loss_weight=args.outline_loss_weight,
                                        timestep_range=args.timestep_range,
                                        branch_off_timestep_range=args.branch_off_timestep_range)
                loss = compute_loss(model, inputs, diffusion).loss.mean()
                if args.stage == 2 and inputs.subject is None:
                    # every story unconditional: the subject branch is unused, but every rank must run a backward
                    # through its parameters (zero gradients) so DDP's reduction and the optimizer stay in step
                    loss = loss + 0.0 * sum(p.sum() for p in trained_params)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trained_params, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_losses.append(loss.detach())
            step_stories += len(batch)
            step_frames += batch.num_frames
            state.stories_seen += len(batch)
            state.frames_seen += batch.num_frames
            if not accelerator.sync_gradients:
                continue
            # an optimizer step happened
            state.global_step += 1
            if ema is not None:
                ema.step()
            now = time.perf_counter()
            counts = accelerator.reduce(torch.tensor([float(step_stories), float(step_frames)], device=device), "sum")
            mean_loss = accelerator.reduce(torch.stack(step_losses).mean()[None], "mean").item()
            logs = {"train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0],
                    "train/step_time_s": now - last_time, "train/samples_per_s": counts[0].item() / (now - last_time),
                    "train/frames_per_s": counts[1].item() / (now - last_time), "train/skipped": state.skipped,
                    "train/epoch": state.epoch}
            history.append(mean_loss)
            step_losses, step_stories, step_frames, last_time = [], 0, 0, now
            if state.global_step % args.checkpointing_steps == 0 or state.global_step == max_train_steps:
                checkpoint = save_checkpoint(accelerator, args.output_dir, state, generator,
                                             args.checkpoints_total_limit, model=model, names=parts)
            if args.validation_steps and state.global_step % args.validation_steps == 0:
                logs.update(_validate(args, accelerator, model, components, validation, diffusion, table,
                                      state.global_step, ema))
            accelerator.log(logs, step=state.global_step)
            if on_step is not None:
                on_step(state, logs)
            if state.global_step >= max_train_steps:
                break
        else:  # the epoch is exhausted
            state.epoch += 1
            state.batch_in_epoch = 0
            continue
        break

    # 6. Export the trained part (save_pretrained form) and finish; never the untrained initialisation
    read, skipped = _totals(accelerator, skips)
    if state.global_step == 0:
        raise TrainingDataError(f"no optimisation step ran ({skipped} of {read} stories skipped as unreadable"
                                f"{skips.examples()}); nothing exported")
    if skips.exceeded(read, skipped, final=True):
        raise skips.error(read, skipped)
    output = _export_final(accelerator, model, args, parts, ema)
    accelerator.end_training()
    logger.info("done: %d steps, %d stories skipped on this process; exported %s", state.global_step, state.skipped,
                output)
    return {"global_step": state.global_step, "loss_history": history, "skipped": state.skipped, "output": output,
            "checkpoint": checkpoint, "read": read, "skipped_total": skipped,
            "main_process": accelerator.is_main_process}


def _totals(accelerator, skips: SkipTracker) -> tuple[int, int]:
    """Stories read and skipped so far, summed over ranks."""
    if accelerator.num_processes == 1:
        return skips.read, skips.skipped
    total = accelerator.reduce(torch.tensor([float(skips.read), float(skips.skipped)], device=accelerator.device),
                               "sum")
    return int(total[0].item()), int(total[1].item())


@dataclass(frozen=True)
class _Validation:
    """Where validation stories' features come from: the cache (and its caption encoder) or live T5/VAE."""

    cache: object | None
    captions: CaptionEncoder | None


def _validate(args, accelerator, model, components, validation: _Validation, diffusion, table, step,
              ema: ModuleEMA | None) -> dict:
    """Validation loss on ``validation_data`` (all ranks) and rendered stories (main process); EMA weights if kept."""
    from training.loop_data import build_validation_batches

    logs: dict = {}
    if ema is not None:
        ema.store()
        ema.copy_to()
    try:
        if args.validation_data:
            batches = build_validation_batches(args, table, validation.cache, accelerator)
            sums = validation_loss(model, batches, stage=args.stage, captions=validation.captions,
                                   components=components,
                                   diffusion=diffusion, seed=args.seed, device=accelerator.device,
                                   max_batches=args.validation_batches)
            total = accelerator.reduce(torch.tensor([sums["loss"], sums["mse"], sums["vb"], sums["frames"]],
                                                    device=accelerator.device), "sum")
            if total[3] > 0:
                logs.update({"val/loss": (total[0] / total[3]).item(), "val/mse": (total[1] / total[3]).item(),
                             "val/vb": (total[2] / total[3]).item()})
        if args.validation_stories:
            if str(accelerator.distributed_type).endswith("FSDP"):
                logger.warning("validation_stories: not rendered under FSDP (sharded weights); use the exported "
                               "weights with the pipeline instead")
            elif accelerator.is_main_process:
                images = render_validation_stories(
                    accelerator.unwrap_model(model), components, args.validation_stories, step=step,
                    folder=os.path.join(args.output_dir, "validation"), device=accelerator.device, seed=args.seed,
                    num_inference_steps=args.validation_num_inference_steps,
                    guidance_scale=args.validation_guidance_scale, resolution=args.resolution,
                    autocast=accelerator.autocast)
                _log_images(accelerator, images, step)
            accelerator.wait_for_everyone()
    finally:
        if ema is not None:
            ema.restore()
    return logs


def _log_images(accelerator, images: dict, step: int) -> None:
    import numpy as np

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for name, frames in images.items():
                stacked = np.stack([np.asarray(im) for im in frames])
                tracker.writer.add_images(f"validation/{name}", stacked, step, dataformats="NHWC")


def cli(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from lay2story_core.loading import ModelLoadError

    try:
        summary = main(parse_args(argv))
    except (ConfigError, TrainingDataError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    read, skipped = summary["read"], summary["skipped_total"]
    if not summary["main_process"]:  # one summary line per run, not one per process
        return 0
    print(f"trained {summary['global_step']} steps, skipped {skipped} of {read} stories "  # noqa: T201 - CLI output
          f"({100 * skipped / max(read, 1):.0f}%); exported {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
