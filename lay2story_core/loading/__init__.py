"""Weight loaders for the models Lay2Story runs on: PixArt transformer, T5 encoder + tokenizer, VAE.

Each loader takes a single file (as ComfyUI users keep them), a diffusers/transformers folder, a pipeline folder
or (only when asked) a hub id, and returns the diffusers/transformers model in eval mode. Weights are read with
safetensors or ``torch.load(weights_only=True)``; every failure is a :class:`ModelLoadError` naming the path.
"""

from .errors import (
    CorruptFileError,
    HubUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    ShapeMismatchError,
    StateDictKeysError,
    UnsupportedFormatError,
    WrongArchitectureError,
)
from .pixart import (
    PIXART_HEAD_DIM,
    PixArtCheckpointInfo,
    convert_pixart_original_to_diffusers,
    infer_pixart_config,
    load_pixart_transformer,
    load_pixart_transformer_with_info,
)
from .sniff import describe_architecture, sniff_architecture, sniff_components
from .state_dict import read_state_dict
from .t5 import infer_t5_config, load_t5_encoder
from .tokenizer import load_t5_tokenizer
from .vae import BUNDLED_VAE_CONFIGS, convert_ldm_vae_to_diffusers, infer_vae_config, load_vae

__all__ = [
    "BUNDLED_VAE_CONFIGS",
    "PIXART_HEAD_DIM",
    "CorruptFileError",
    "HubUnavailableError",
    "ModelLoadError",
    "ModelNotFoundError",
    "PixArtCheckpointInfo",
    "ShapeMismatchError",
    "StateDictKeysError",
    "UnsupportedFormatError",
    "WrongArchitectureError",
    "convert_ldm_vae_to_diffusers",
    "convert_pixart_original_to_diffusers",
    "describe_architecture",
    "infer_pixart_config",
    "infer_t5_config",
    "infer_vae_config",
    "load_pixart_transformer",
    "load_pixart_transformer_with_info",
    "load_t5_encoder",
    "load_t5_tokenizer",
    "load_vae",
    "read_state_dict",
    "sniff_architecture",
    "sniff_components",
]
