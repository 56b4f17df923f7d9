"""Fixtures for the node tests: a tiny ComfyUI-style models folder, and an in-process runner of API-format prompts
(what ComfyUI's executor does: inputs validated against INPUT_TYPES, nodes run in link order)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from nodes import comfy_env, model_files
from nodes.registry import NODE_CLASS_MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_workflows"
CORE_SINKS = ("SaveImage", "PreviewImage")
# The real ComfyUI: $COMFYUI_DIR, else the checkout beside this repository (../shared/comfyui/ComfyUI) when present.
_SHARED_COMFY = ROOT.parent / "shared" / "comfyui" / "ComfyUI"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR") or (str(_SHARED_COMFY) if (_SHARED_COMFY / "comfy").is_dir() else None)


def real_comfy_available() -> bool:
    """Whether the real ComfyUI and its requirements are there (else the real-host checks skip)."""
    if not COMFYUI_DIR:
        return False
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torchsde", "kornia", "aiohttp", "alembic"))


def run_real_check(script: str, *args: str, timeout: float = 900) -> dict:
    """Run ``tests/nodes/<script>`` against the real ComfyUI in its own process; its last stdout line (JSON)."""
    import subprocess

    if not real_comfy_available():
        pytest.skip("no real ComfyUI (COMFYUI_DIR, or ../shared/comfyui/ComfyUI with its requirements installed)")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), COMFYUI_DIR, *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])  # ComfyUI nodes the examples end in: recorded, not run

# Model names used by the examples (example_workflows/), created tiny by `models_root`.
PIXART_FILE = "PixArt-XL-2-512x512.pth"
T5_FILE = "t5xxl_fp16.safetensors"
VAE_FILE = "vae-ft-mse-840000-ema-pruned.safetensors"
DETECTOR = "grounding-dino-tiny"


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    """A ComfyUI ``models/`` folder of tiny real models: a Lay2Story pipeline folder and a subject branch folder in
    lay2story/, single files in checkpoints/, text_encoders/ (+ a tokenizer folder beside it) and vae/, and a
    Grounding DINO folder in grounding-dino/."""
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from safetensors.torch import save_file
    from tiny_models import make_pipeline, make_t5, make_tokenizer

    from lay2story_core.pipelines.loading import save_story_pipeline
    from lay2story_core.vision.tiny import save_tiny_grounding_dino

    root = tmp_path_factory.mktemp("comfy_models")
    pipe = make_pipeline()
    save_story_pipeline(pipe, root / "lay2story" / "tiny_pipeline")
    pipe.subject_branch.save_pretrained(root / "lay2story" / "tiny_branch")

    for sub in ("checkpoints", "text_encoders", "vae"):
        (root / sub).mkdir()
    torch.manual_seed(0)
    # Released PixArt checkpoints have 72-wide heads (what single files are read with); diffusers key names.
    pixart = PixArtTransformer2DModel(sample_size=8, num_layers=2, num_attention_heads=1, attention_head_dim=72,
                                      in_channels=4, out_channels=8, cross_attention_dim=72, caption_channels=12,
                                      patch_size=2)
    torch.save({k: v.contiguous() for k, v in pixart.state_dict().items()}, root / "checkpoints" / PIXART_FILE)
    t5 = make_t5(12)
    t5_state = {k: v.half().contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_state, str(root / "text_encoders" / T5_FILE))  # as ComfyUI keeps T5-XXL
    make_tokenizer().save_pretrained(root / "text_encoders" / f"{Path(T5_FILE).stem}_tokenizer")
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), latent_channels=4,
                        layers_per_block=1)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(root / "vae" / VAE_FILE))
    save_tiny_grounding_dino(root / "grounding-dino" / DETECTOR)
    return root


@pytest.fixture
def comfy_models(models_root, monkeypatch) -> Path:
    """Points the nodes at ``models_root`` (no ComfyUI: the LAY2STORY_MODELS_DIR fallback) and makes its pipeline
    folder the embedded ShapeStory demo."""
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    monkeypatch.setenv(comfy_env.MODELS_DIR_ENV, str(models_root))
    monkeypatch.setattr(model_files, "EMBEDDED_MODEL", models_root / "lay2story" / "tiny_pipeline")
    return models_root


# ------------------------------------------------------------------------------------------------ the runner
def is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def topological_order(prompt: Mapping[str, dict]) -> list[str]:
    order, state = [], {}

    def visit(node_id: str) -> None:
        if state.get(node_id) == "done":
            return
        if state.get(node_id) == "open":
            raise ValueError(f"cycle through node {node_id}")
        state[node_id] = "open"
        for value in prompt[node_id]["inputs"].values():
            if is_link(value):
                if value[0] not in prompt:
                    raise ValueError(f"node {node_id}: link to missing node {value[0]}")
                visit(value[0])
        state[node_id] = "done"
        order.append(node_id)

    for node_id in sorted(prompt, key=int):
        visit(node_id)
    return order


def check_widget(class_type: str, name: str, value: object, kind: object, options: dict) -> None:
    """ComfyUI's prompt validation of one widget value."""
    where = f"{class_type}.{name}"
    if isinstance(kind, list):
        assert value in kind, f"{where}: {value!r} is not one of {kind}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an INT"
        assert options.get("min", value) <= value <= options.get("max", value), f"{where}: {value} out of range"
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} not a FLOAT"
        assert options.get("min", value) <= value <= options.get("max", value), f"{where}: {value} out of range"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r} is not a BOOLEAN"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is not a STRING"


def run_prompt(prompt: Mapping[str, dict], overrides: Mapping[str, Mapping] | None = None):
    """Runs an API-format prompt in-process. ``overrides``: per class type, input values replacing the prompt's
    (e.g. fewer steps on tiny models). Returns ``(outputs per node id, ui per node id, sink inputs per node id)``."""
    outputs, uis, sinks = {}, {}, {}
    for node_id in topological_order(prompt):
        node = prompt[node_id]
        class_type = node["class_type"]
        inputs = {name: outputs[v[0]][v[1]] if is_link(v) else v for name, v in node["inputs"].items()}
        inputs.update((overrides or {}).get(class_type, {}))
        if class_type in CORE_SINKS:
            sinks[node_id] = inputs
            continue
        cls = NODE_CLASS_MAPPINGS[class_type]
        spec = cls.INPUT_TYPES()
        for name in spec["required"]:
            assert name in inputs, f"node {node_id} ({class_type}): required input {name!r} missing"
        declared = {**spec["required"], **spec.get("optional", {})}
        for name, value in inputs.items():
            assert name in declared, f"node {node_id} ({class_type}): unknown input {name!r}"
            kind, options = declared[name]
            if not is_link(node["inputs"].get(name)):
                check_widget(class_type, name, value, kind, options)
        result = getattr(cls(), cls.FUNCTION)(**inputs)
        if isinstance(result, dict):
            uis[node_id] = result.get("ui")
            result = result["result"]
        assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES), f"{class_type} returned {result!r}"
        outputs[node_id] = result
    return outputs, uis, sinks


def load_example(name: str, api: bool = True) -> dict:
    path = EXAMPLES / "api" / f"{name}.json" if api else EXAMPLES / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def run_api():
    return run_prompt
