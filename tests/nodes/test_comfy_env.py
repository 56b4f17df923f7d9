"""nodes/comfy_env.py: the LAY2STORY_MODELS_DIR fallback without ComfyUI, and the calls it makes into ComfyUI's
modules when they are there (stand-ins with the same names and signatures)."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch

from nodes import comfy_env, model_files


@pytest.fixture
def no_comfy(monkeypatch):
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.utils", "latent_preview"):
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.fixture
def fake_comfy(tmp_path, monkeypatch):
    """Stand-ins for ComfyUI's folder_paths, comfy.model_management, comfy.utils and the comfy package folder."""
    calls = []
    models = tmp_path / "models"
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models)
    fp.folder_names_and_paths = {"checkpoints": ([str(models / "checkpoints")], {".safetensors"}),
                                 "text_encoders": ([str(models / "text_encoders"), str(models / "clip")], set())}

    def add_model_folder_path(name, path, is_default=False):
        calls.append(("add_model_folder_path", name, path))
        fp.folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_filename_list = lambda name: ["b.safetensors", "a.pth", "notes.txt"] if name == "checkpoints" else []
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.should_use_bf16 = lambda device: calls.append(("should_use_bf16", str(device))) or False
    mm.soft_empty_cache = lambda: calls.append(("soft_empty_cache",))
    mm.free_memory = lambda num_bytes, device: calls.append(("free_memory", num_bytes, str(device)))
    mm.text_encoder_offload_device = lambda: torch.device("cpu")

    class Interrupted(Exception):
        pass

    def throw():
        if calls and calls[-1] == ("interrupt",):
            raise Interrupted

    mm.throw_exception_if_processing_interrupted = throw
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):
            calls.append(("ProgressBar", total))

        def update_absolute(self, value, total=None, preview=None):
            calls.append(("update", value, total))

    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.__path__ = [str(tmp_path / "comfy")]
    tok = tmp_path / "comfy" / "text_encoders" / "t5_tokenizer"
    tok.mkdir(parents=True)
    (tok / "tokenizer.json").write_text("{}")
    for name, module in (("folder_paths", fp), ("comfy", comfy), ("comfy.model_management", mm),
                         ("comfy.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "latent_preview", raising=False)
    return types.SimpleNamespace(calls=calls, models=models, Interrupted=Interrupted, tokenizer=tok)


def test_without_comfyui_and_without_a_models_dir_lists_are_empty(no_comfy, monkeypatch):
    monkeypatch.delenv(comfy_env.MODELS_DIR_ENV, raising=False)
    assert not comfy_env.in_comfyui()
    assert comfy_env.folder_paths_for("checkpoints") == [] and comfy_env.list_model_files("vae") == []
    assert model_files.vae_choices() == ["auto"] and model_files.subject_branch_choices() == ["auto", "none"]
    with pytest.raises(ValueError, match=r"vae: 'vae/x\.safetensors' not found.*LAY2STORY_MODELS_DIR"):
        model_files.resolve_choice("vae/x.safetensors", "vae")
    assert comfy_env.latent_previewer(torch.device("cpu")) is None
    assert comfy_env.comfy_t5_tokenizer_dir() is None
    comfy_env.throw_if_interrupted()  # no-op
    comfy_env.progress_bar(3).update_absolute(1, 3, None)  # no-op


def test_fallback_models_dir_lists_files_and_folders(no_comfy, tmp_path, monkeypatch):
    monkeypatch.setenv(comfy_env.MODELS_DIR_ENV, str(tmp_path))
    (tmp_path / "unet" / "sub").mkdir(parents=True)
    (tmp_path / "unet" / "sub" / "m.safetensors").write_bytes(b"x")
    (tmp_path / "diffusion_models").mkdir()
    (tmp_path / "diffusion_models" / "n.pth").write_bytes(b"xy")
    (tmp_path / "diffusion_models" / "readme.txt").write_text("no")
    (tmp_path / "lay2story" / "group" / "branch").mkdir(parents=True)
    (tmp_path / "lay2story" / "group" / "branch" / "config.json").write_text('{"_class_name": "SubjectBranch"}')
    (tmp_path / "lay2story" / "other").mkdir()
    assert comfy_env.list_model_files("diffusion_models") == ["n.pth", "sub/m.safetensors"]  # unet is an alias
    assert comfy_env.list_model_folders("lay2story", lambda p: os.path.isfile(os.path.join(p, "config.json"))) == [
        "group/branch"]
    assert model_files.subject_branch_choices() == ["auto", "none", "lay2story/group/branch"]
    files = [c for c in model_files.model_choices() if c != model_files.EMBEDDED_LABEL]  # the demo ships in the repo
    assert files == ["diffusion_models/n.pth", "diffusion_models/sub/m.safetensors"]
    assert model_files.resolve_choice("diffusion_models/sub/m.safetensors", "model").endswith("sub/m.safetensors")
    assert model_files.path_size(str(tmp_path / "diffusion_models")) == 2


@pytest.mark.parametrize("bad", ["../secret.pth", "vae/../../x", "vae/", "", "vae//x", "nofolder"])
def test_resolve_choice_rejects_paths_outside_the_folders(no_comfy, tmp_path, monkeypatch, bad):
    monkeypatch.setenv(comfy_env.MODELS_DIR_ENV, str(tmp_path))
    (tmp_path / "secret.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match="^vae: "):
        model_files.resolve_choice(bad, "vae")


def test_inside_comfyui_folder_paths_is_used_and_pack_folders_registered(fake_comfy):
    assert comfy_env.in_comfyui()
    registered = {c[1]: c[2] for c in fake_comfy.calls if c[0] == "add_model_folder_path"}
    assert registered == {"lay2story": str(fake_comfy.models / "lay2story"),
                          "grounding-dino": str(fake_comfy.models / "grounding-dino")}
    assert comfy_env.list_model_files("checkpoints") == ["a.pth", "b.safetensors"]  # weights only, sorted
    assert comfy_env.folder_paths_for("text_encoders")[1].endswith("clip")
    assert comfy_env.folder_paths_for("no-such-kind") == []
    comfy_env.in_comfyui()
    assert len([c for c in fake_comfy.calls if c[0] == "add_model_folder_path"]) == 2  # idempotent
    assert comfy_env.comfy_t5_tokenizer_dir() == str(fake_comfy.tokenizer)
    assert model_files.COMFY_T5_TOKENIZER in model_files.tokenizer_choices()


def test_inside_comfyui_model_management_is_used(fake_comfy):
    calls = fake_comfy.calls
    assert comfy_env.resolve_device("auto") == torch.device("cpu")
    assert comfy_env.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert comfy_env.resolve_dtype("auto", torch.device("meta")) == torch.float16  # should_use_bf16 said no
    assert ("should_use_bf16", "meta") in calls
    comfy_env.soft_empty_cache()
    comfy_env.free_memory(123, torch.device("meta"))
    comfy_env.free_memory(456, torch.device("cpu"))  # nothing to free on the CPU
    assert ("soft_empty_cache",) in calls and ("free_memory", 123, "meta") in calls
    assert not any(c[0] == "free_memory" and c[1] == 456 for c in calls)
    bar = comfy_env.progress_bar(5)
    bar.update_absolute(2, 5, None)
    assert ("ProgressBar", 5) in calls and ("update", 2, 5) in calls
    comfy_env.throw_if_interrupted()
    calls.append(("interrupt",))
    with pytest.raises(fake_comfy.Interrupted):
        comfy_env.throw_if_interrupted()


def test_device_and_precision_choices(no_comfy):
    assert comfy_env.resolve_device("cpu") == torch.device("cpu")
    assert comfy_env.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert comfy_env.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu' or 'cuda', got 'tpu'"):
        comfy_env.resolve_device("tpu")
    with pytest.raises(ValueError, match="precision: expected one of .* got 'fp8'"):
        comfy_env.resolve_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda' was chosen but torch sees no CUDA device"):
            comfy_env.resolve_device("cuda")
