"""The model sockets a node that samples takes (Story Sampler, Redo Frames): the pack's ``model`` +
``text_encoder``, or ComfyUI's ``pixart`` MODEL + ``clip`` + ``vae`` with an optional ``subject_branch``. Their
types are defined once here; each node words its own tooltips (see ``sampler.model_sockets`` for the checks)."""

from __future__ import annotations

__all__ = ["MODEL_SOCKET_TYPES", "model_inputs"]

MODEL_SOCKET_TYPES = {
    "model": "L2S_MODEL",
    "text_encoder": "L2S_TEXT_ENCODER",
    "pixart": "MODEL",
    "clip": "CLIP",
    "vae": "VAE",
    "subject_branch": "L2S_SUBJECT_BRANCH",
}


def model_inputs(**tooltips: str) -> dict[str, tuple[str, dict]]:
    """ComfyUI input specs of the named model sockets, in the order given: ``{name: (type, {"tooltip": text})}``."""
    return {name: (MODEL_SOCKET_TYPES[name], {"tooltip": tooltip}) for name, tooltip in tooltips.items()}
