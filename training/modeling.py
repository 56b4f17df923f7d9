"""Build what a training stage needs: the dual-branch model with the right parts frozen, T5 and the VAE.

Stage 1 trains ``model.transformer`` (the PixArt global branch; the model has no subject branch). Stage 2 freezes the
global branch and trains ``model.subject_branch`` only, or, with ``--train_transformer``, both (a joint fine-tune).
Frozen parts (T5, VAE, the stage-2 global branch) are kept in ``--frozen_dtype`` (half precision under mixed
precision), optionally on the CPU; trained parts stay in float32 (the optimizer's master weights; mixed precision
autocasts the forward).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from lay2story_core.latents import LatentNormalization
from lay2story_core.models import Lay2StoryTransformer, SubjectBranch

__all__ = ["TRAINABLE_PARTS", "Components", "VaeInfo", "initialize_pixart_", "load_components", "resolve_frozen_dtype",
           "trainable_name", "trained_names"]

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class VaeInfo:
    """What the trainer needs to know about the VAE even when its latents come from a cache."""

    latent_channels: int
    scale_factor: int  # pixels per latent cell
    scaling_factor: float
    latents_mean: tuple[float, ...] | None = None  # per-channel statistics (diffusers' VAE config keys)
    latents_std: tuple[float, ...] | None = None

    @classmethod
    def from_vae(cls, vae) -> VaeInfo:
        cfg = vae.config
        norm = LatentNormalization.from_vae(vae)
        return cls(int(cfg.latent_channels), 2 ** (len(cfg.block_out_channels) - 1), norm.scaling_factor, norm.mean,
                   norm.std)

    @property
    def normalization(self) -> LatentNormalization:
        """VAE latents <-> the denoiser's space, the same rule as the pipeline's."""
        mean, std = self.latents_mean, self.latents_std
        return LatentNormalization(self.scaling_factor, None if mean is None else tuple(mean),
                                   None if std is None else tuple(std))

    def to_dict(self) -> dict:
        return {"latent_channels": self.latent_channels, "scale_factor": self.scale_factor,
                "scaling_factor": self.scaling_factor,
                "latents_mean": None if self.latents_mean is None else list(self.latents_mean),
                "latents_std": None if self.latents_std is None else list(self.latents_std)}


@dataclass
class Components:
    model: Lay2StoryTransformer
    tokenizer: object | None
    text_encoder: nn.Module | None
    vae: nn.Module | None
    vae_info: VaeInfo
    frozen_dtype: torch.dtype

    @property
    def patch_size(self) -> int:
        return int(self.model.transformer.config.patch_size)


@torch.no_grad()
def initialize_pixart_(transformer: nn.Module) -> nn.Module:
    """PixArt-alpha's (and DiT's) initialisation for a transformer trained from scratch, on diffusers' module names
    (``PixArt.initialize_weights`` in PixArt-alpha's ``PixArt.py``): xavier-uniform linears with zero biases, the
    patch embedding initialised like a linear, N(0, 0.02) timestep and caption MLPs, and zeroed cross-attention
    outputs and final projection, so the untrained model predicts zero noise and every block starts as the identity
    on its cross-attention path. diffusers' constructor uses PyTorch's default init instead (kaiming-uniform with
    a = sqrt(5)), which the ShapeStory measurements showed learns several times slower from scratch."""
    for module in transformer.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    proj = transformer.pos_embed.proj
    nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    nn.init.zeros_(proj.bias)
    emb = transformer.adaln_single.emb.timestep_embedder
    for linear in (emb.linear_1, emb.linear_2, transformer.adaln_single.linear):
        nn.init.normal_(linear.weight, std=0.02)
    caption = getattr(transformer, "caption_projection", None)
    if caption is not None:
        nn.init.normal_(caption.linear_1.weight, std=0.02)
        nn.init.normal_(caption.linear_2.weight, std=0.02)
    for block in transformer.transformer_blocks:
        nn.init.zeros_(block.attn2.to_out[0].weight)
        nn.init.zeros_(block.attn2.to_out[0].bias)
    nn.init.zeros_(transformer.proj_out.weight)
    nn.init.zeros_(transformer.proj_out.bias)
    return transformer


TRAINABLE_PARTS = ("transformer", "subject_branch")  # every sub-module a run can train (see trained_names)


def trainable_name(stage: int) -> str:
    """The sub-module a stage trains, and the folder name it is exported under."""
    return "transformer" if stage == 1 else "subject_branch"


def trained_names(stage: int, train_transformer: bool = False) -> tuple[str, ...]:
    """Every sub-module a run trains (each exported as ``<name>/``): the stage's own, plus the global branch in a
    stage-2 joint fine-tune."""
    name = trainable_name(stage)
    return (name, "transformer") if stage == 2 and train_transformer else (name,)


def resolve_frozen_dtype(frozen_dtype: str, mixed_precision: str) -> torch.dtype:
    if frozen_dtype == "auto":
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    return _DTYPES[frozen_dtype]


def _source(args, name: str) -> str:
    path = getattr(args, f"{name}_path", None) or args.pretrained_model_name_or_path
    if path is None:
        raise ValueError(f"{name}_path: no {name} given (set pretrained_model_name_or_path or {name}_path)")
    return path


def load_text_encoder(args, device: torch.device, dtype: torch.dtype):
    from lay2story_core.loading import load_t5_encoder, load_t5_tokenizer

    tokenizer = load_t5_tokenizer(_source(args, "tokenizer"))
    encoder = load_t5_encoder(_source(args, "text_encoder"), torch_dtype=dtype, device=device)
    return tokenizer, encoder.requires_grad_(False).eval()


def load_vae(args, device: torch.device, dtype: torch.dtype):
    from lay2story_core.loading import load_vae as _load

    return _load(_source(args, "vae"), torch_dtype=dtype, device=device).requires_grad_(False).eval()


def build_model(args, fsdp: bool = False, frozen_dtype: torch.dtype = torch.float32) -> Lay2StoryTransformer:
    """The model of ``args.stage`` with ``requires_grad`` set (float32 trained part, frozen part in
    ``frozen_dtype`` unless ``fsdp``, whose flat parameters need one dtype)."""
    from lay2story_core.loading import load_pixart_transformer

    pixart = load_pixart_transformer(_source(args, "transformer"), torch_dtype=torch.float32)
    if args.stage == 1:
        model = Lay2StoryTransformer(pixart, None)
        model.requires_grad_(True)
        model.train()
        return model
    if args.subject_branch_path:
        from lay2story_core.pipelines.loading import load_subject_branch

        branch = load_subject_branch(args.subject_branch_path, torch_dtype=torch.float32)
        if args.subject_branch_layers is not None and branch.config.num_layers != args.subject_branch_layers:
            raise ValueError(f"subject_branch_layers: {args.subject_branch_layers} but {args.subject_branch_path!r} "
                             f"has {branch.config.num_layers}")
        if args.box_embedding:
            branch = branch.with_box_embedding()
    else:
        branch = SubjectBranch.from_transformer(pixart, num_layers=args.subject_branch_layers,
                                                box_embedding=args.box_embedding)
    model = Lay2StoryTransformer(pixart, branch)
    model.requires_grad_(False)
    pixart.eval()
    branch.requires_grad_(True)
    branch.train()
    if args.train_transformer:
        pixart.requires_grad_(True)
        pixart.train()
    elif frozen_dtype != torch.float32 and not fsdp:
        pixart.to(frozen_dtype)
    return model


def load_components(args, device: torch.device, mixed_precision: str, *, need_text: bool, need_vae: bool,
                    vae_info: VaeInfo | None = None, fsdp: bool = False) -> Components:
    """Load the model (on the CPU; ``accelerator.prepare`` places it) and, when needed, T5 and the VAE on their
    devices. ``vae_info`` must be given when the VAE is not loaded (it comes from the feature cache)."""
    frozen = resolve_frozen_dtype(args.frozen_dtype, mixed_precision)
    if args.stage == 2 and frozen != torch.float32 and mixed_precision not in ("fp16", "bf16"):
        logger.warning("frozen_dtype %s without mixed precision: the stage-2 global branch stays float32", frozen)
        model = build_model(args, fsdp, torch.float32)
    else:
        model = build_model(args, fsdp, frozen)
    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if args.torch_compile:
        # the global blocks only (fixed shapes per bucket); the subject blocks' packed token counts change every
        # step and their masked attention branches on data, so compiling them only recompiles and breaks graphs
        for block in model.transformer.transformer_blocks:
            block.compile()
    tokenizer = encoder = vae = None
    if need_text:
        text_device = device if args.text_encoder_device == "accelerator" else torch.device("cpu")
        tokenizer, encoder = load_text_encoder(args, text_device, frozen)
    if need_vae:
        vae_device = device if args.vae_device == "accelerator" else torch.device("cpu")
        vae = load_vae(args, vae_device, frozen)
        vae_info = VaeInfo.from_vae(vae)
    if vae_info is None:
        raise ValueError("vae_info: required when the VAE is not loaded")
    if vae_info.latent_channels != model.transformer.config.in_channels:
        raise ValueError(f"vae: {vae_info.latent_channels} latent channels, the transformer takes "
                         f"{model.transformer.config.in_channels}")
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("stage %d: %.2fM trained parameters of %.2fM (frozen dtype %s)", args.stage, trained / 1e6,
                sum(p.numel() for p in model.parameters()) / 1e6, frozen)
    return Components(model, tokenizer, encoder, vae, vae_info, frozen)
