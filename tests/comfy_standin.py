"""A small stand-in of exactly the ComfyUI interfaces the pack calls, for CI (ComfyUI itself cannot be installed from
the registries CI reaches). Everything lives here; each class and function names the ComfyUI code it mirrors
(ComfyUI 0.3.64). The real host is exercised by ``test_comfy_real_host.py`` when ``COMFYUI_DIR`` is set.

``install(monkeypatch)`` registers the modules ``folder_paths``, ``comfy``, ``comfy.model_management``,
``comfy.model_patcher``, ``comfy.ops``, ``comfy.utils``, ``comfy.sd``, ``comfy.latent_formats`` and
``comfy.ldm.pixart.pixartms`` in ``sys.modules``.

``PixArtMS`` here is written from the original PixArt-alpha/-Sigma code (Apache-2.0; the module and parameter names
of its checkpoints, which are also ComfyUI's) with ComfyUI's conventions: the positional grid recomputed from the
current size by ComfyUI's formula, captions attended without a mask, learned sigma dropped from the output.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------------------- comfy.ops
class _CastWeightBiasOp:
    """``comfy.ops.CastWeightBiasOp``: ``comfy_cast_weights`` (set by low-VRAM loading) casts weight and bias to the
    input's dtype and device on every call; ``weight_function``/``bias_function`` patch them (LoRA in low VRAM)."""

    comfy_cast_weights = False
    weight_function: list = []
    bias_function: list = []

    def _cast(self, x):
        weight = None if self.weight is None else self.weight.to(dtype=x.dtype, device=x.device)
        bias = None if self.bias is None else self.bias.to(dtype=x.dtype, device=x.device)
        for f in self.weight_function:
            weight = f(weight)
        for f in self.bias_function:
            bias = f(bias)
        return weight, bias

    def _casting(self) -> bool:
        return self.comfy_cast_weights or bool(self.weight_function) or bool(self.bias_function)


class _Linear(nn.Linear, _CastWeightBiasOp):
    """``comfy.ops.disable_weight_init.Linear``."""

    def forward(self, x):
        if self._casting():
            return F.linear(x, *self._cast(x))
        return super().forward(x)


class _Conv2d(nn.Conv2d, _CastWeightBiasOp):
    """``comfy.ops.disable_weight_init.Conv2d``."""

    def forward(self, x):
        if self._casting():
            return self._conv_forward(x, *self._cast(x))
        return super().forward(x)


class _LayerNorm(nn.LayerNorm, _CastWeightBiasOp):
    """``comfy.ops.disable_weight_init.LayerNorm``."""

    def forward(self, x):
        if self._casting() and self.weight is not None:
            weight, bias = self._cast(x)
            return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)
        return super().forward(x)


ops = types.SimpleNamespace(disable_weight_init=types.SimpleNamespace(Linear=_Linear, Conv2d=_Conv2d,
                                                                      LayerNorm=_LayerNorm))


# ------------------------------------------------------------------------------------------ PixArtMS (ComfyUI)
def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """``comfy.ldm.modules.diffusionmodules.mmdit.timestep_embedding`` (PixArt's sinusoidal embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def get_1d_sincos_pos_embed_from_grid_torch(embed_dim, pos, device=None, dtype=torch.float32):
    """``mmdit.get_1d_sincos_pos_embed_from_grid_torch``."""
    omega = torch.arange(embed_dim // 2, device=device, dtype=dtype) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def get_2d_sincos_pos_embed_torch(embed_dim, w, h, pe_interpolation=1.0, base_size=16, device=None,
                                  dtype=torch.float32):
    """``comfy.ldm.pixart.pixartms.get_2d_sincos_pos_embed_torch``."""
    grid_h, grid_w = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype) / (h / base_size) / pe_interpolation,
        torch.arange(w, device=device, dtype=dtype) / (w / base_size) / pe_interpolation, indexing="ij")
    emb_h = get_1d_sincos_pos_embed_from_grid_torch(embed_dim // 2, grid_h, device=device, dtype=dtype)
    emb_w = get_1d_sincos_pos_embed_from_grid_torch(embed_dim // 2, grid_w, device=device, dtype=dtype)
    return torch.cat([emb_w, emb_h], dim=1)


class _Mlp(nn.Module):
    def __init__(self, d_in, d_hidden, d_out, act):
        super().__init__()
        self.fc1, self.act, self.fc2 = _Linear(d_in, d_hidden), act, _Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _TimestepEmbedder(nn.Module):
    """``mmdit.TimestepEmbedder`` (``t_embedder``) and PixArt's ``SizeEmbedder`` (``csize/ar_embedder``)."""

    def __init__(self, hidden, freq=256):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(_Linear(freq, hidden), nn.SiLU(), _Linear(hidden, hidden))

    def forward(self, t, dtype):
        return self.mlp(timestep_embedding(t, self.freq).to(dtype))


class _SizeEmbedder(_TimestepEmbedder):
    def forward(self, s, bs):
        if s.shape[0] != bs:
            s = s.repeat(bs // s.shape[0], 1)
        b, dims = s.shape
        emb = self.mlp(timestep_embedding(s.reshape(-1), self.freq).to(s.dtype))
        return emb.reshape(b, dims * emb.shape[-1])


class _PatchEmbed(nn.Module):
    def __init__(self, patch, c_in, hidden):
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = _Conv2d(c_in, hidden, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _SelfAttention(nn.Module):
    """``comfy.ldm.pixart.blocks.AttentionKVCompress`` (no compression)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.sr_ratio = heads, 1
        self.qkv, self.proj = _Linear(dim, 3 * dim), _Linear(dim, dim)
        self.q_norm = self.k_norm = nn.Identity()

    def forward(self, x, mask=None, HW=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        q, k, v = (t.reshape(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2) for t in (q, k, v))
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class _CrossAttention(nn.Module):
    """``comfy.ldm.pixart.blocks.MultiHeadCrossAttention`` (ComfyUI attends every caption token: no mask)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.q_linear, self.kv_linear, self.proj = _Linear(dim, dim), _Linear(dim, 2 * dim), _Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x, cond, mask=None):
        assert mask is None
        b, n, c = x.shape
        q = self.q_linear(x).view(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)
        k, v = self.kv_linear(cond).view(b, -1, 2, self.num_heads, c // self.num_heads).unbind(2)
        out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class _Block(nn.Module):
    """``comfy.ldm.pixart.pixartms.PixArtMSBlock``."""

    def __init__(self, hidden, heads):
        super().__init__()
        self.norm1 = _LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn, self.cross_attn = _SelfAttention(hidden, heads), _CrossAttention(hidden, heads)
        self.norm2 = _LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = _Mlp(hidden, 4 * hidden, hidden, nn.GELU(approximate="tanh"))
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden) / hidden**0.5)

    def forward(self, x, y, t, mask=None, HW=None):
        b = x.shape[0]
        table = self.scale_shift_table[None].to(dtype=x.dtype, device=x.device) + t.reshape(b, 6, -1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table.chunk(6, dim=1)
        x = x + gate_msa * self.attn(self.norm1(x) * (1 + scale_msa) + shift_msa, HW=HW)
        x = x + self.cross_attn(x, y, mask)
        return x + gate_mlp * self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp)


class _FinalLayer(nn.Module):
    """``comfy.ldm.pixart.blocks.T2IFinalLayer``."""

    def __init__(self, hidden, patch, out_channels):
        super().__init__()
        self.norm_final = _LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = _Linear(hidden, patch * patch * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden) / hidden**0.5)

    def forward(self, x, t):
        shift, scale = (self.scale_shift_table[None].to(dtype=x.dtype, device=x.device) + t[:, None]).chunk(2, dim=1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class _CaptionEmbedder(nn.Module):
    def __init__(self, c_in, hidden):
        super().__init__()
        self.y_proj = _Mlp(c_in, hidden, hidden, nn.GELU(approximate="tanh"))

    def forward(self, caption, train, force_drop_ids=None):
        return self.y_proj(caption)


class PixArtMS(nn.Module):
    """``comfy.ldm.pixart.pixartms.PixArtMS`` (see the module docstring)."""

    def __init__(self, hidden_size=144, depth=2, num_heads=2, patch_size=2, in_channels=4, caption_channels=12,
                 micro_condition=False, pe_interpolation=None, pe_precision=None):
        super().__init__()
        self.hidden_size, self.depth, self.num_heads, self.patch_size = hidden_size, depth, num_heads, patch_size
        self.in_channels, self.out_channels, self.pred_sigma = in_channels, 2 * in_channels, True
        self.pe_interpolation, self.pe_precision, self.micro_conditioning = pe_interpolation, pe_precision, (
            micro_condition)
        self.dtype = None
        self.t_block = nn.Sequential(nn.SiLU(), _Linear(hidden_size, 6 * hidden_size))
        self.x_embedder = _PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = _TimestepEmbedder(hidden_size)
        self.y_embedder = _CaptionEmbedder(caption_channels, hidden_size)
        if micro_condition:
            self.csize_embedder = _SizeEmbedder(hidden_size // 3)
            self.ar_embedder = _SizeEmbedder(hidden_size // 3)
        self.blocks = nn.ModuleList([_Block(hidden_size, num_heads) for _ in range(depth)])
        self.final_layer = _FinalLayer(hidden_size, patch_size, self.out_channels)

    def forward_orig(self, x, timestep, y, mask=None, c_size=None, c_ar=None):
        """``PixArtMS.forward_orig``: ComfyUI's positional grid from the current size."""
        _, _, h, w = x.shape
        c_res = (h + w) // 2
        pe_interpolation = self.pe_interpolation
        if pe_interpolation is None or self.pe_precision is not None:
            pe_interpolation = round(c_res / (512 / 8.0), self.pe_precision or 0)
        pos = get_2d_sincos_pos_embed_torch(self.hidden_size, h=h // self.patch_size, w=w // self.patch_size,
                                            pe_interpolation=pe_interpolation,
                                            base_size=((round(c_res / 64) * 64) // self.patch_size),
                                            device=x.device, dtype=x.dtype).unsqueeze(0)
        x = self.x_embedder(x) + pos
        t = self.t_embedder(timestep, x.dtype)
        if self.micro_conditioning and c_size is not None and c_ar is not None:
            t = t + torch.cat([self.csize_embedder(c_size, x.shape[0]), self.ar_embedder(c_ar, x.shape[0])], dim=1)
        t0 = self.t_block(t)
        y = self.y_embedder(y.squeeze(1), False)
        for block in self.blocks:
            x = block(x, y, t0, None, (h, w))
        return self.unpatchify(self.final_layer(x, t), h, w)

    def forward(self, x, timesteps, context, c_size=None, c_ar=None, **kwargs):
        """``PixArtMS.forward``: micro-condition fallbacks, eps only."""
        b, _, h, w = x.shape
        if self.micro_conditioning:
            if c_size is None:
                c_size = torch.tensor([h * 8, w * 8], dtype=x.dtype, device=x.device).repeat(b, 1)
            if c_ar is None:
                c_ar = torch.tensor([h / w], dtype=x.dtype, device=x.device).repeat(b, 1)
        out = self.forward_orig(x, timesteps, context, c_size=c_size, c_ar=c_ar)
        return out[:, : self.in_channels]

    def unpatchify(self, x, h, w):
        c, p = self.out_channels, self.patch_size
        h, w = h // p, w // p
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)


# ---------------------------------------------------------------------------------- model_base, latent_formats
class SD15:
    """``comfy.latent_formats.SD15``: ``process_in`` scales VAE latents for the model, ``process_out`` back."""

    scale_factor = 0.18215

    def process_in(self, latent):
        return latent * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor


class BaseModel(nn.Module):
    """``comfy.model_base.PixArt`` (a ``BaseModel``): ``diffusion_model``, ``latent_format``, ``manual_cast_dtype``,
    ``get_dtype``, ``memory_required``."""

    def __init__(self, diffusion_model: nn.Module, manual_cast_dtype: torch.dtype | None = None):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.latent_format = SD15()
        self.manual_cast_dtype = manual_cast_dtype

    def get_dtype(self):
        return next(self.diffusion_model.parameters()).dtype

    def memory_required(self, input_shape):
        return int(input_shape[0] * math.prod(input_shape[2:]) * 0.15 * 1024 * 1024)


# ----------------------------------------------------------------------------------------- model_patcher
class ModelPatcher:
    """``comfy.model_patcher.ModelPatcher``: ``model``, ``load_device``, ``offload_device``, ``clone`` (shares the
    model), ``add_patches`` (weight patches, as LoRA loaders add; applied by ``patch_model`` at load, removed by
    ``unpatch_model``), ``get_model_object``, ``memory_required``, ``model_size``."""

    def __init__(self, model, load_device, offload_device, size=0):
        self.model, self.load_device, self.offload_device = model, torch.device(load_device), offload_device
        self.patches: dict[str, list] = {}
        self.backup: dict[str, torch.Tensor] = {}
        self.size = size
        self.parent = None
        if not hasattr(model, "device"):
            model.device = offload_device

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        n.parent = self
        return n

    def is_clone(self, other) -> bool:
        return getattr(other, "model", None) is self.model

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0):
        for key, diff in patches.items():
            self.patches.setdefault(key, []).append((strength_patch, diff))
        return list(patches)

    def model_size(self):
        return self.size or sum(t.numel() * t.element_size() for t in self.model.state_dict().values())

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape)

    def get_model_object(self, name):
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def model_dtype(self):
        return self.model.get_dtype() if hasattr(self.model, "get_dtype") else None

    def patch_model(self, lowvram: bool = False):
        """``ModelPatcher.load``/``patch_model``: apply weight patches; in low VRAM, turn weight casting on."""
        state = dict(self.model.named_parameters())
        for key, items in self.patches.items():
            weight = state[key]
            self.backup.setdefault(key, weight.detach().clone())
            with torch.no_grad():
                weight.copy_(self.backup[key] + sum(s * d.to(weight) for s, d in items))
        for module in self.model.modules():
            if isinstance(module, _CastWeightBiasOp):
                module.comfy_cast_weights = lowvram
        self.model.device = self.load_device

    def unpatch_model(self):
        """``ModelPatcher.unpatch_model``: restore the backed-up weights."""
        state = dict(self.model.named_parameters())
        with torch.no_grad():
            for key, weight in self.backup.items():
                state[key].copy_(weight)
        self.backup.clear()
        for module in self.model.modules():
            if isinstance(module, _CastWeightBiasOp):
                module.comfy_cast_weights = False


# ---------------------------------------------------------------------------------------- model_management
@dataclass
class ModelManagement:
    """``comfy.model_management`` (module functions as methods; ``install`` exposes them as a module)."""

    low_vram: bool = False
    calls: list = field(default_factory=list)
    current_loaded_models: list = field(default_factory=list)
    interrupted: bool = False

    def get_torch_device(self):
        """``get_torch_device``."""
        return torch.device("cpu")

    def unet_offload_device(self):
        """``unet_offload_device``."""
        return torch.device("cpu")

    def text_encoder_offload_device(self):
        """``text_encoder_offload_device``."""
        return torch.device("cpu")

    def should_use_bf16(self, device=None):
        """``should_use_bf16``."""
        return False

    def load_models_gpu(self, models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        """``load_models_gpu``: unload clones of the requested models, patch and place each one (low VRAM: weights
        stay where they are and are cast per call, unless ``force_full_load``)."""
        self.calls.append(("load_models_gpu", tuple(id(m) for m in models), int(memory_required), force_full_load))
        for m in models:
            for loaded in list(self.current_loaded_models):
                if loaded is not m and (loaded.is_clone(m) if hasattr(loaded, "is_clone") else False):
                    loaded.unpatch_model()
                    self.current_loaded_models.remove(loaded)
            if m not in self.current_loaded_models:
                m.patch_model(lowvram=self.low_vram and not force_full_load)
                self.current_loaded_models.insert(0, m)

    def load_model_gpu(self, model):
        """``load_model_gpu``."""
        return self.load_models_gpu([model])

    def unload_all_models(self):
        """``unload_all_models``: unpatch and drop every loaded model."""
        for m in self.current_loaded_models:
            m.unpatch_model()
        self.current_loaded_models.clear()

    def free_memory(self, memory_required, device, keep_loaded=()):
        """``free_memory``."""
        self.calls.append(("free_memory", int(memory_required), str(device)))

    def soft_empty_cache(self, force=False):
        """``soft_empty_cache``."""
        self.calls.append(("soft_empty_cache",))

    def throw_exception_if_processing_interrupted(self):
        """``throw_exception_if_processing_interrupted``: raises ``InterruptProcessingException`` once."""
        if self.interrupted:
            self.interrupted = False
            raise InterruptProcessingException()


class InterruptProcessingException(Exception):
    """``comfy.model_management.InterruptProcessingException``."""


# ---------------------------------------------------------------------------------------------- comfy.sd
class _Holder(nn.Module):
    """ComfyUI wraps encoders in its own modules (``SD1ClipModel``, ``AutoencoderKL``), which have a plain
    ``device`` attribute for ``ModelPatcher``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.device = torch.device("cpu")


class CLIP:
    """``comfy.sd.CLIP`` with ComfyUI's PixArt T5 tokenizer behaviour (``comfy/text_encoders/pixart_t5.py``: no
    padding, no truncation, the end token, at least one token): ``tokenize`` -> ``{"t5xxl": [[(id, weight)]]}``,
    ``encode_from_tokens(tokens, return_dict=True)`` -> ``{"cond": (1, L, C)}`` after ``load_model_gpu``."""

    def __init__(self, encoder: nn.Module, tokenizer, mm: ModelManagement):
        self.encoder, self.tokenizer, self.mm = encoder, tokenizer, mm
        self.patcher = ModelPatcher(_Holder(encoder), mm.get_torch_device(), mm.text_encoder_offload_device())
        self.encoded: list[str] = []

    def tokenize(self, text: str, return_word_ids=False, **kwargs):
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"] or [self.tokenizer.pad_token_id]
        return {"t5xxl": [[(int(i), 1.0) for i in ids]]}

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        self.mm.load_model_gpu(self.patcher)
        ids = torch.tensor([[t for t, _ in tokens["t5xxl"][0]]])
        self.encoded.append(self.tokenizer.decode(ids[0]))
        with torch.no_grad():
            cond = self.encoder(input_ids=ids).last_hidden_state.float()
        return {"cond": cond, "pooled_output": None} if return_dict else cond


class VAE:
    """``comfy.sd.VAE``: ``encode(pixels (B, H, W, C) in [0, 1])`` -> raw latents, ``decode(latents)`` ->
    ``(B, H, W, 3)`` in [0, 1], each after ``load_models_gpu([self.patcher])``; ``spacial_compression_encode``."""

    def __init__(self, autoencoder: nn.Module, mm: ModelManagement):
        self.first_stage_model, self.mm = autoencoder, mm
        self.patcher = ModelPatcher(_Holder(autoencoder), mm.get_torch_device(), mm.unet_offload_device())

    def spacial_compression_encode(self):
        return 2 ** (len(self.first_stage_model.config.block_out_channels) - 1)

    def encode(self, pixel_samples):
        self.mm.load_models_gpu([self.patcher])
        with torch.no_grad():
            x = pixel_samples[..., :3].movedim(-1, 1) * 2 - 1
            return self.first_stage_model.encode(x).latent_dist.mode().float()

    def decode(self, samples_in):
        self.mm.load_models_gpu([self.patcher])
        with torch.no_grad():
            out = self.first_stage_model.decode(samples_in.float()).sample
        return ((out + 1) / 2).clamp(0, 1).movedim(1, -1)


# ------------------------------------------------------------------------------------------------ install
class ProgressBar:
    """``comfy.utils.ProgressBar``: every update is also a Cancel point (its hook calls
    ``throw_exception_if_processing_interrupted``)."""

    updates: list = []

    def __init__(self, total):
        self.total = total

    def update_absolute(self, value, total=None, preview=None):
        ProgressBar.updates.append((value, total))
        _MM[0].throw_exception_if_processing_interrupted()


_MM: list = [None]


def install(monkeypatch, models_dir=None, low_vram: bool = False) -> ModelManagement:
    """Register the stand-in modules; returns the model-management state (calls, loaded models, interrupt)."""
    mm = ModelManagement(low_vram=low_vram)
    _MM[0] = mm
    ProgressBar.updates = []
    mm_module = types.ModuleType("comfy.model_management")
    for name in ("get_torch_device", "unet_offload_device", "text_encoder_offload_device", "should_use_bf16",
                 "load_models_gpu", "load_model_gpu", "unload_all_models", "free_memory", "soft_empty_cache",
                 "throw_exception_if_processing_interrupted"):
        setattr(mm_module, name, getattr(mm, name))
    mm_module.InterruptProcessingException = InterruptProcessingException
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    pixartms = types.ModuleType("comfy.ldm.pixart.pixartms")
    pixartms.PixArtMS, pixartms.get_2d_sincos_pos_embed_torch = PixArtMS, get_2d_sincos_pos_embed_torch
    PixArtMS.__module__ = "comfy.ldm.pixart.pixartms"
    folder_paths = types.ModuleType("folder_paths")
    root = str(models_dir or "/nonexistent")
    folder_paths.models_dir = root
    folder_paths.folder_names_and_paths = {}
    folder_paths.add_model_folder_path = lambda name, path, is_default=False: (
        folder_paths.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path))
    folder_paths.get_folder_paths = lambda name: list(folder_paths.folder_names_and_paths[name][0])
    folder_paths.get_filename_list = lambda name: []
    for kind in ("checkpoints", "diffusion_models", "text_encoders", "vae"):
        folder_paths.add_model_folder_path(kind, f"{root}/{kind}")
    modules = {
        "folder_paths": folder_paths, "comfy": comfy, "comfy.model_management": mm_module,
        "comfy.model_patcher": types.SimpleNamespace(ModelPatcher=ModelPatcher),
        "comfy.ops": ops, "comfy.utils": types.SimpleNamespace(ProgressBar=ProgressBar),
        "comfy.sd": types.SimpleNamespace(CLIP=CLIP, VAE=VAE),
        "comfy.latent_formats": types.SimpleNamespace(SD15=SD15),
        "comfy.ldm": types.ModuleType("comfy.ldm"), "comfy.ldm.pixart": types.ModuleType("comfy.ldm.pixart"),
        "comfy.ldm.pixart.pixartms": pixartms,
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "latent_preview", raising=False)
    return mm


# ------------------------------------------------------------------------------------- core loader nodes
def core_nodes(mm: ModelManagement, models_dir) -> dict[str, type]:
    """Stand-ins of ComfyUI's core nodes the example workflows use (``nodes.py``: ``UNETLoader``, ``CLIPLoader``,
    ``VAELoader``, ``VAEDecode``), reading ``models_dir``'s folders. ``UNETLoader`` reads original-key PixArt
    checkpoints (ComfyUI's keys) and infers the size from the tensors, as ``model_detection.py`` does."""
    import os

    from lay2story_core.loading import load_t5_encoder, load_t5_tokenizer, load_vae

    def path(kind, name):
        return os.path.join(str(models_dir), kind, name)

    class UNETLoader:
        FUNCTION, RETURN_TYPES = "load_unet", ("MODEL",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"unet_name": ("STRING", {}), "weight_dtype": ("STRING", {})}}

        def load_unet(self, unet_name, weight_dtype):
            sd = torch.load(path("diffusion_models", unet_name), weights_only=True)
            hidden = sd["x_embedder.proj.weight"].shape[0]
            depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
            dm = PixArtMS(hidden_size=hidden, depth=depth, num_heads=hidden // 72,
                          caption_channels=sd["y_embedder.y_proj.fc1.weight"].shape[1],
                          micro_condition="csize_embedder.mlp.0.weight" in sd)
            dm.load_state_dict(sd)
            return (ModelPatcher(BaseModel(dm.eval()), mm.get_torch_device(), mm.unet_offload_device()),)

    class CLIPLoader:
        FUNCTION, RETURN_TYPES = "load_clip", ("CLIP",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"clip_name": ("STRING", {}), "type": ("STRING", {})},
                    "optional": {"device": ("STRING", {})}}

        def load_clip(self, clip_name, type="stable_diffusion", device="default"):
            assert type == "pixart"
            file = path("text_encoders", clip_name)
            tokenizer = load_t5_tokenizer(os.path.splitext(file)[0] + "_tokenizer")
            return (CLIP(load_t5_encoder(file).eval(), tokenizer, mm),)

    class VAELoader:
        FUNCTION, RETURN_TYPES = "load_vae", ("VAE",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"vae_name": ("STRING", {})}}

        def load_vae(self, vae_name):
            return (VAE(load_vae(path("vae", vae_name)).eval(), mm),)

    class VAEDecode:
        FUNCTION, RETURN_TYPES = "decode", ("IMAGE",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"samples": ("LATENT", {}), "vae": ("VAE", {})}}

        def decode(self, vae, samples):
            return (vae.decode(samples["samples"]),)

    return {cls.__name__: cls for cls in (UNETLoader, CLIPLoader, VAELoader, VAEDecode)}
