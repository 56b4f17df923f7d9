"""The story-patched MODEL example workflows (``example_workflows/api/story_*.json``) on a real ComfyUI server:
shared by their real-host tests (tests/nodes/test_story_workflows_real.py) and their thumbnails::

    nice -n 15 env OMP_NUM_THREADS=2 .ci/venv/bin/python tests/nodes/story_server.py [--only NAME]

The server runs headless on the CPU (tests/nodes/test_comfy_real_host.py's ``Server``) with this pack in
``custom_nodes/`` and a models folder of random-weight files in the formats ComfyUI's loaders detect
(tests/nodes/story_models.py). ``COMFYUI_MODELS_DIR`` (a real models folder) is searched first: a workflow's file
that is there is used as it is. Where the file a workflow names is not on the server, :func:`stand_ins` swaps in
what is, and says so (on the thumbnail, in the test figures):

* T5-XXL (FLUX's DualCLIPLoader, PixArt's CLIPLoader): ComfyUI builds the full 4.7B-parameter T5-XXL whatever the
  file holds (too big and slow for a 2-core CI machine: FLUX pads every prompt to 256 tokens). Stand-in: the CLIP-L
  file through CLIPLoader type ``sd3``, which ComfyUI pads to T5's 4096 channels (FLUX takes the first 768 of its
  pooled output, as it does from CLIP-L).
* The SDXL checkpoint: ComfyUI's SDXL detection fixes the full 2.6B-parameter UNet (transformer depth
  [0, 0, 2, 2, 10, 10]) and SDXL needs the full CLIP-G. Stand-in: the random SD1.5 checkpoint, in the same graph.

The PixArt Lay2Story workflow runs on a random two-block PixArt-XL and a random subject branch: the embedded
ShapeStory demo cannot be loaded by ComfyUI's loaders (its PixArt is 192 wide, and ComfyUI's PixArt detection fixes
1152), so no thumbnail here shows a trained model: every one is labelled as a random-weight run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from story_models import CLIP_L_FILE, SD15_FILE  # noqa: E402
from test_comfy_real_host import PYTHON, Server, _free_port  # noqa: E402

logger = logging.getLogger("story_server")
EXAMPLES = ROOT / "example_workflows"
STORY_NAMES = ("story_sd15_two_characters", "story_sdxl_comic", "story_flux_boxes",
               "story_pixart_lay2story_ksampler")
T5_STAND_IN = "T5-XXL stand-in: CLIP-L padded to 4096 (CLIPLoader sd3)"
SDXL_STAND_IN = "SDXL stand-in: the random SD1.5 checkpoint"
RANDOM_NOTE = "Real ComfyUI run, random weights ({size} px, {steps} steps): noise"
# folders of a ComfyUI models folder the examples read (both spellings ComfyUI accepts)
MODEL_FOLDERS = {"checkpoints": ["checkpoints"], "text_encoders": ["text_encoders", "clip"],
                 "diffusion_models": ["diffusion_models", "unet"], "vae": ["vae"], "lay2story": ["lay2story"]}


def load_api(name: str) -> dict:
    return json.loads((EXAMPLES / "api" / f"{name}.json").read_text(encoding="utf-8"))


def of_type(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if v["class_type"] == class_type]


def fast(prompt: dict, seed: int, steps: int = 2, size: int = 64) -> dict:
    """The workflow with ``size`` px frames, ``steps`` steps and a new seed (ComfyUI caches identical prompts)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "L2S_EmptyStoryLatent":
            inputs.update(width=size, height=size)
        elif node["class_type"] in ("KSampler", "BasicScheduler"):
            inputs["steps"] = steps
            if "seed" in inputs:
                inputs["seed"] = seed
        elif node["class_type"] == "RandomNoise":
            inputs["noise_seed"] = seed
    return prompt


def stand_ins(prompt: dict, object_info: dict) -> tuple[dict, list[str]]:
    """The prompt with each model file the server does not have swapped for a stand-in (module docstring), and
    notes naming the swaps."""
    prompt = json.loads(json.dumps(prompt))
    notes: list[str] = []

    def have(class_type: str, name: str, value: str) -> bool:
        spec = object_info[class_type]["input"]
        options = {**spec.get("required", {}), **spec.get("optional", {})}[name][0]
        return value in options

    for key in of_type(prompt, "DualCLIPLoader") + of_type(prompt, "CLIPLoader"):
        inputs = prompt[key]["inputs"]
        names = [inputs[k] for k in ("clip_name", "clip_name1", "clip_name2") if k in inputs]
        if all(have("CLIPLoader", "clip_name", n) for n in names):
            continue
        prompt[key] = {"class_type": "CLIPLoader",
                       "inputs": {"clip_name": CLIP_L_FILE, "type": "sd3", "device": "default"}}
        notes.append(T5_STAND_IN)
    for key in of_type(prompt, "CheckpointLoaderSimple"):
        if not have("CheckpointLoaderSimple", "ckpt_name", prompt[key]["inputs"]["ckpt_name"]):
            prompt[key]["inputs"]["ckpt_name"] = SD15_FILE
            notes.append(SDXL_STAND_IN)
    return prompt, notes


def build_models(out: Path, comfy_dir: str, families: str | None = None) -> dict:
    """story_models.py in its own process (it boots ComfyUI); its figures."""
    args = [PYTHON, str(HERE / "story_models.py"), comfy_dir, str(out), *([families] if families else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    if done.returncode != 0:
        raise RuntimeError(f"story_models.py failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_server(base: Path, models: Path, comfy_dir: str) -> Server:
    """ComfyUI on ``base`` with this pack, ``models`` (and ``COMFYUI_MODELS_DIR`` first, when set), PNGs saved
    without metadata (so two runs' files compare byte for byte)."""
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "comfyui_lay2story").symlink_to(ROOT)
    real = os.environ.get("COMFYUI_MODELS_DIR")
    (base / "models").symlink_to(real or models)
    extra = ["--disable-metadata"]
    if real:  # the real folder is ComfyUI's own (searched first); the random files fill in what it lacks
        config = {"l2s_random_models": {"base_path": str(models),
                                        **{k: "\n".join(v) for k, v in MODEL_FOLDERS.items()}}}
        (base / "extra_model_paths.yaml").write_text(json.dumps(config))  # JSON is YAML
        extra += ["--extra-model-paths-config", str(base / "extra_model_paths.yaml")]
    server = Server(base, _free_port(), tuple(extra), comfy_dir)
    server.wait_up()
    return server


def saved_files(server: Server, entry: dict, node_id: str, kind: str = "images") -> list[Path]:
    """The files a node of a finished prompt wrote (SaveImage: output/, previews: temp/; SaveLatent: ``kind``
    "latents")."""
    images = entry["outputs"].get(node_id, {}).get(kind, [])
    return [server.base / image["type"] / image["subfolder"] / image["filename"] for image in images]


def run_error(server: Server, prompt: dict, timeout: float = 300) -> str | None:
    """``None`` when the prompt ran, else its error: the validation answer (HTTP 400) or the execution error's
    node type, id and message."""
    status, answer = server.post("/prompt", {"prompt": prompt, "client_id": "l2s"})
    if status != 200:
        return f"HTTP {status}: {json.dumps(answer)}"
    prompt_id, start = answer["prompt_id"], time.monotonic()
    while prompt_id not in (history := server.get(f"/history/{prompt_id}")):
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"prompt {prompt_id} did not finish")
        time.sleep(0.2)
    entry = history[prompt_id]
    if entry["status"]["status_str"] == "success":
        return None
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data['node_type']} (node {data['node_id']}): {data['exception_message'].strip()}"
    return json.dumps(entry["status"])


# ------------------------------------------------------------------------------------------------- thumbnails
def picture(name: str, prompt: dict, server: Server, entry: dict):
    """What the workflow makes, as one picture: its comic page, the layout preview's frames as a 2 x 2 page, or
    its frames as a 2 x 2 page captioned with the story's frame prompts."""
    from PIL import Image
    from render_thumbnails import PANEL

    from lay2story_core.comic import compose_comic
    from lay2story_core.story import Story

    if name == "story_sd15_two_characters":
        panels = [Image.open(p).convert("RGB") for p in saved_files(server, entry, of_type(prompt,
                                                                                           "L2S_LayoutPreview")[0])]
        return compose_comic(panels[:4], None, "four_panel", PANEL)[0]
    [save] = of_type(prompt, "SaveImage")
    images = [Image.open(p).convert("RGB") for p in saved_files(server, entry, save)]
    if of_type(prompt, "L2S_ComicPage"):
        return images[0]
    story = Story.from_json(prompt[of_type(prompt, "L2S_StoryFromJSON")[0]]["inputs"]["story_json"])
    frames = [image.resize((256, 256), Image.NEAREST) for image in images[:4]]
    return compose_comic(frames, [f.prompt for f in story.frames[:4]], "four_panel", PANEL)[0]


def render_thumbnails(names=STORY_NAMES, out_dir: str | Path = EXAMPLES, steps: int = 2, size: int = 64) -> list[str]:
    """``<out_dir>/<name>.jpg`` for each workflow, from its run through a real ComfyUI server (stand-ins noted)."""
    from render_thumbnails import with_notes

    from tests.nodes.conftest import COMFYUI_DIR

    if not COMFYUI_DIR:
        raise SystemExit("no real ComfyUI: set COMFYUI_DIR (or keep ../shared/comfyui/ComfyUI)")
    written = []
    work = Path(tempfile.mkdtemp(prefix="l2s_story_thumbs_"))
    try:
        build_models(work / "models", COMFYUI_DIR)
        server = start_server(work / "base", work / "models", COMFYUI_DIR)
        try:
            info = server.get("/object_info")
            for name in names:
                prompt, notes = stand_ins(fast(load_api(name), seed=1, steps=steps, size=size), info)
                seconds, entry = server.run(prompt)
                if entry["status"]["status_str"] != "success":
                    raise RuntimeError(f"{name}: {json.dumps(entry['status'])[:2000]}")
                notes = [RANDOM_NOTE.format(size=size, steps=steps), *dict.fromkeys(notes)]
                image = with_notes(picture(name, prompt, server, entry), notes)
                path = Path(out_dir) / f"{name}.jpg"
                image.save(f"{path}.tmp", format="JPEG", quality=90)
                os.replace(f"{path}.tmp", path)
                logger.info("%s: %.1f s (%s)", path.name, seconds, "; ".join(notes))
                written.append(str(path))
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=STORY_NAMES, action="append", help="this workflow only (repeatable)")
    parser.add_argument("--out", default=str(EXAMPLES), help="output folder (default: example_workflows/)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in render_thumbnails(args.only or STORY_NAMES, args.out):
        logger.info("wrote %s", os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
