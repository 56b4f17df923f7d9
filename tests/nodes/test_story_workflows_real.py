"""The story-patched MODEL example workflows (issue 25) through ``POST /prompt`` of a real ComfyUI server.

One server for the module (tests/nodes/story_server.py): ComfyUI 0.3.64 headless on the CPU with this pack, on a
models folder of random-weight files in the formats ComfyUI's own loaders detect (tests/nodes/story_models.py: an
SD1.5 single-file checkpoint with the full CLIP-L and VAE, a FLUX.1 diffusion model with one double and one single
block, PixArt-XL-2 with two blocks, FLUX's and SD's VAEs, a Lay2Story subject branch, an SD3 MMDiT). Frames are
64 px and sampling takes 2 steps; the module takes about 2 minutes on 2 idle cores (building the files ~20 s,
starting the server ~15 s, each run 2-15 s).

What runs without ``COMFYUI_MODELS_DIR`` (CI): every example workflow, with stand-ins where ComfyUI would build a
model too large for a 2-core machine (story_server.stand_ins): T5-XXL (FLUX, PixArt) is replaced by CLIP-L through
CLIPLoader type ``sd3`` (4096 channels, as T5's), and the SDXL checkpoint by the SD1.5 one (ComfyUI's SDXL
detection fixes the full 2.6B-parameter UNet). So FLUX and PixArt run their own diffusion models, VAEs, samplers
and story patches through the server, the SDXL graph runs on an SD1.5 model, and no SDXL-class model and no T5 run
here. With ``COMFYUI_MODELS_DIR`` pointing at a real models folder, the files found there are used as the
workflows name them (no stand-in for those).

Checked: ComfyUI's detection of each file; the workflows' widget order against the server's own ``/object_info``;
every workflow runs; Apply Story at rate 0 gives byte-identical saved images to the same graph without it (SD1.5,
FLUX; PixArt training-free: its saved latents at 320 px, ComfyUI's own PixArt fails at 256 px); KSampler,
KSamplerAdvanced and SamplerCustomAdvanced give byte-identical frames from the story MODEL; bad inputs are each
answered with an error naming the input, the server stays up, and the plain graph and the story graph give the same
bytes after them as before, sampled anew (nothing left half-patched; the server answers the next prompt).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from tests.nodes.conftest import COMFYUI_DIR, real_comfy_available
from tests.nodes.story_server import (
    EXAMPLES,
    STORY_NAMES,
    build_models,
    fast,
    load_api,
    of_type,
    run_error,
    saved_files,
    stand_ins,
    start_server,
)

logger = logging.getLogger(__name__)
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# A layout of another story: six frames, characters this story does not have (the generator's comic story).
OTHER_LAYOUT = {"version": 2, "characters": ["hero", "friend"], "frames": [
    {"subjects": [{"character": "hero", "box": [0.1, 0.1, 0.5, 0.9]}]} for _ in range(6)]}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if not real_comfy_available():
        pytest.skip("no real ComfyUI (COMFYUI_DIR, or ../shared/comfyui/ComfyUI with its requirements installed)")
    work = tmp_path_factory.mktemp("story_host")
    figures = build_models(work / "models", COMFYUI_DIR)
    start = time.monotonic()
    server = start_server(work / "base", work / "models", COMFYUI_DIR)
    figures["server_start_s"] = round(time.monotonic() - start, 1)
    try:
        yield server, figures, server.get("/object_info")
    finally:
        server.stop()
        logger.info("story host figures: %s", json.dumps(figures))
        if os.environ.get("L2S_STORY_HOST_REPORT"):  # the figures (timings, stand-ins, error lines) as JSON
            Path(os.environ["L2S_STORY_HOST_REPORT"]).write_text(json.dumps(figures, indent=1))


def _run(server, prompt: dict) -> dict:
    _, entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    return entry


def _bytes(server, entry: dict, node_id: str) -> list[bytes]:
    files = saved_files(server, entry, node_id)
    assert files, f"node {node_id} saved nothing"
    return [f.read_bytes() for f in files]


def _frames_saver(prompt: dict, prefix: str) -> tuple[dict, str]:
    """The prompt with a SaveImage of the decoded frames (the VAE Decode's output) added; that node's id."""
    [decode] = of_type(prompt, "VAEDecode")
    prompt["90"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": prefix}}
    return prompt, "90"


# ------------------------------------------------------------------------------------------ files and graphs
def test_story_examples_are_what_the_generator_writes(tmp_path):
    """UI + API files as tests/nodes/make_example_workflows.py writes them, each with a thumbnail (no server)."""
    from PIL import Image

    from tests.nodes.test_example_workflows import generator

    generator().write(str(tmp_path), thumbnails=False)
    for name in STORY_NAMES:
        for rel in (f"{name}.json", f"api/{name}.json"):
            assert json.loads((tmp_path / rel).read_text()) == json.loads((EXAMPLES / rel).read_text()), (
                f"{rel} is stale: run tests/nodes/make_example_workflows.py")
        with Image.open(EXAMPLES / f"{name}.jpg") as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 512 and min(thumb.size) >= 128


def test_comfyui_detects_the_random_model_files(host):
    _, figures, info = host
    assert figures["detected"] == {"v1-5-pruned-emaonly-fp16.safetensors": "SD15", "sd3_tiny.safetensors": "SD3",
                                   "PixArt-XL-2-512x512.pth": "PixArtSigma", "flux1-dev.safetensors": "Flux"}
    assert {"L2S_ApplyStory", "L2S_StoryConditioning", "L2S_EmptyStoryLatent"} <= set(info)
    log = (host[0].base / "server.log").read_text()
    assert "IMPORT FAILED" not in log


def ui_to_api(workflow: dict, info: dict) -> dict:
    """What ComfyUI's frontend sends for a UI workflow, by the server's own node definitions (``/object_info``:
    widget inputs in ``input_order``, a control_after_generate value after a seed)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        spec, order = info[node["type"]]["input"], info[node["type"]]["input_order"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        values, inputs = list(node["widgets_values"]), {}
        for name in order.get("required", []) + order.get("optional", []):
            kind, options = declared[name][0], (declared[name] + [{}])[1]
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):
                inputs[name] = values.pop(0)
                if options.get("control_after_generate"):
                    assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
        assert not values, f"node {node['id']} ({node['type']}): widget values left over: {values}"
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, src, slot, dst, _, _ = links[socket["link"]]
                inputs[socket["name"]] = [str(src), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", STORY_NAMES)
def test_ui_workflow_is_what_comfyui_would_send(host, name):
    _, _, info = host
    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    api = load_api(name)
    assert ui_to_api(ui, info) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert ui["extra"]["description"] and "\n" not in ui["extra"]["description"]
    for node in api.values():  # every choice is one the server offers (model files aside: the user's own)
        spec = info[node["class_type"]]["input"]
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for key, value in node["inputs"].items():
            options = declared[key][0]
            if isinstance(options, list) and not key.endswith(("_name", "_name1", "_name2", "subject_branch")):
                assert value in options, (node["class_type"], key, value)


# -------------------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize("name", STORY_NAMES)
def test_workflow_runs_through_the_server(host, name):
    server, figures, info = host
    prompt, notes = stand_ins(fast(load_api(name), seed=1), info)
    start = time.monotonic()
    entry = _run(server, prompt)
    figures.setdefault("workflows_s", {})[name] = round(time.monotonic() - start, 1)
    figures.setdefault("stand_ins", {})[name] = notes
    from PIL import Image

    [save] = of_type(prompt, "SaveImage")
    images = [Image.open(p) for p in saved_files(server, entry, save)]
    if of_type(prompt, "L2S_ComicPage"):  # 4 frames: one page
        assert len(images) == 1 and min(images[0].size) > 256
    else:
        assert [im.size for im in images] == [(64, 64)] * 4
    if name == "story_sd15_two_characters":  # the layout preview: the 4 frames with their drawn boxes
        assert len(saved_files(server, entry, of_type(prompt, "L2S_LayoutPreview")[0])) == 4


def _without_story(prompt: dict) -> dict:
    """The same graph with Apply Story taken out: every consumer of its MODEL takes the loader's MODEL."""
    [apply] = of_type(prompt, "L2S_ApplyStory")
    source = prompt[apply]["inputs"]["model"]
    del prompt[apply]
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if value == [apply, 0]:
                node["inputs"][key] = source
    return prompt


def _latent_saver(prompt: dict, prefix: str) -> tuple[dict, str]:
    """The prompt ending in a SaveLatent of the sampler's output instead of decoding (VAE Decode and what follows
    it taken out); that node's id."""
    [decode] = of_type(prompt, "VAEDecode")
    samples = prompt[decode]["inputs"]["samples"]
    for key in [decode, *of_type(prompt, "SaveImage"), *of_type(prompt, "L2S_ComicPage"),
                *of_type(prompt, "L2S_LayoutPreview")]:
        del prompt[key]
    prompt["91"] = {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": prefix}}
    return prompt, "91"


# PixArt at 320 px: ComfyUI's own PixArt divides by zero at 256 px and below (its position-embedding base size is
# round(latent side / 64) * 32); its latents are compared there (decoding 320 px frames would take most of the time)
RATE_ZERO = {"story_sd15_two_characters": (64, "images"), "story_flux_boxes": (64, "images"),
             "story_pixart_lay2story_ksampler": (320, "latents")}


@pytest.mark.parametrize("name", RATE_ZERO)
def test_rate_zero_gives_the_plain_models_bytes(host, name):
    """Apply Story at rate 0 (no regional captions, no subject branch) saves byte-identical files to the same
    graph without it; at rate 0.5 the frames change (the patch is really there)."""
    server, _, info = host
    size, kind = RATE_ZERO[name]
    base, _ = stand_ins(fast(load_api(name), seed=21, size=size), info)
    [apply] = of_type(base, "L2S_ApplyStory")
    for key in ("clip", "subject_branch"):
        base[apply]["inputs"].pop(key, None)
    rate0, rate_half = json.loads(json.dumps(base)), json.loads(json.dumps(base))
    rate0[apply]["inputs"]["rate"] = 0.0
    rate_half[apply]["inputs"]["rate"] = 0.5
    saved = {}
    for label, prompt in (("plain", _without_story(json.loads(json.dumps(base)))), ("rate0", rate0),
                          ("rate0.5", rate_half)):
        if kind == "latents":
            prompt, saver = _latent_saver(prompt, f"l2s_rate/{name}_{label}")
            files = saved_files(server, _run(server, prompt), saver, "latents")
            saved[label] = [f.read_bytes() for f in files]
        else:
            prompt, saver = _frames_saver(prompt, f"l2s_rate/{name}_{label}")
            entry = _run(server, prompt)
            saved[label] = _bytes(server, entry, saver) + _bytes(server, entry, of_type(prompt, "SaveImage")[0])
    assert saved["rate0"] and saved["rate0"] == saved["plain"]
    assert saved["rate0.5"][0] != saved["plain"][0]


def test_core_samplers_give_the_same_story(host):
    """The story MODEL under KSampler, KSamplerAdvanced (full range) and SamplerCustomAdvanced (CFGGuider, the
    same sampler and scheduler): byte-identical frames."""
    server, _, info = host
    base, _ = stand_ins(fast(load_api("story_sd15_two_characters"), seed=33), info)
    [ks] = of_type(base, "KSampler")
    k = base[ks]["inputs"]
    advanced = json.loads(json.dumps(base))
    advanced[ks] = {"class_type": "KSamplerAdvanced", "inputs": {
        **{key: k[key] for key in ("model", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                   "latent_image")},
        "add_noise": "enable", "noise_seed": k["seed"], "start_at_step": 0, "end_at_step": 10000,
        "return_with_leftover_noise": "disable"}}
    custom = json.loads(json.dumps(base))
    custom.update({
        "80": {"class_type": "RandomNoise", "inputs": {"noise_seed": k["seed"]}},
        "81": {"class_type": "CFGGuider", "inputs": {"model": k["model"], "positive": k["positive"],
                                                     "negative": k["negative"], "cfg": k["cfg"]}},
        "82": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": k["sampler_name"]}},
        "83": {"class_type": "BasicScheduler", "inputs": {"model": k["model"], "scheduler": k["scheduler"],
                                                          "steps": k["steps"], "denoise": 1.0}},
    })
    custom[ks] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["80", 0], "guider": ["81", 0], "sampler": ["82", 0], "sigmas": ["83", 0],
        "latent_image": k["latent_image"]}}
    frames = {}
    for label, prompt in (("ksampler", base), ("advanced", advanced), ("custom", custom)):
        prompt, saver = _frames_saver(json.loads(json.dumps(prompt)), f"l2s_samplers/{label}")
        frames[label] = _bytes(server, _run(server, prompt), saver)
    assert frames["advanced"] == frames["ksampler"]
    assert frames["custom"] == frames["ksampler"]


# ------------------------------------------------------------------------------------------------ bad input
OTHER_CLIP = {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "sd3",
                                                     "device": "default"}}
# name -> (nodes added to the SD1.5 workflow, input changes by class type, the input the error must name)
BAD_CASES = {
    "latent of 3 frames for a 4-frame story": (
        {"70": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}}},
        {"KSampler": {"latent_image": ["70", 0]}}, "latent_image"),
    "layout of another story": (
        {"71": {"class_type": "L2S_LayoutFromJSON", "inputs": {"layout_json": json.dumps(OTHER_LAYOUT)}}},
        {"L2S_ApplyStory": {"layout": ["71", 0]}}, "layout"),
    "SD3 model (unsupported architecture)": (
        {"72": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3_tiny.safetensors",
                                                       "weight_dtype": "default"}}},
        {"L2S_ApplyStory": {"model": ["72", 0]}}, "model"),
    "captions from another CLIP (4096 wide)": (
        {"73": OTHER_CLIP}, {"L2S_ApplyStory": {"clip": ["73", 0]}}, "clip"),
    "conditioning from another CLIP (4096 wide)": (
        {"73": OTHER_CLIP}, {"L2S_StoryConditioning": {"clip": ["73", 0]}}, ("positive", "negative", "clip")),
}


def _bad_prompt(good: dict, case: str) -> dict:
    added, changes, _ = BAD_CASES[case]
    prompt = {**json.loads(json.dumps(good)), **added}
    for class_type, inputs in changes.items():
        for key in of_type(prompt, class_type):
            prompt[key]["inputs"].update(inputs)
    return prompt


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_named_and_the_server_stays_up(host, case):
    server, figures, info = host
    good, _ = stand_ins(fast(load_api("story_sd15_two_characters"), seed=41), info)
    answer = run_error(server, _bad_prompt(good, case))
    figures.setdefault("bad_inputs", {})[case] = answer
    assert server.proc.poll() is None and server.get("/system_stats")
    field = BAD_CASES[case][2]
    fields = (field,) if isinstance(field, str) else field
    message = answer or "(ran without an error)"
    assert any(f"{name}:" in message for name in fields), f"{case}: {message}"


def test_bad_inputs_leave_nothing_patched(host):
    """The plain and the story graph, run before and after every bad prompt: sampled anew the second time (not
    from ComfyUI's cache) and byte-identical."""
    server, _, info = host
    good, _ = stand_ins(fast(load_api("story_sd15_two_characters"), seed=43), info)
    plain, saver = _frames_saver(_without_story(json.loads(json.dumps(good))), "l2s_bad/plain")
    story = _frames_saver(json.loads(json.dumps(good)), "l2s_bad/story")[0]
    before = {label: _bytes(server, _run(server, p), saver) for label, p in (("plain", plain), ("story", story))}
    for case in BAD_CASES:
        run_error(server, _bad_prompt(good, case))
    for label, prompt in (("plain", plain), ("story", story)):
        entry = _run(server, prompt)
        cached = next(data["nodes"] for kind, data in entry["status"]["messages"] if kind == "execution_cached")
        assert of_type(prompt, "KSampler")[0] not in cached
        assert _bytes(server, entry, saver) == before[label], label
