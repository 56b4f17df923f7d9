"""Renders ``example_workflows/<name>.jpg``, the template thumbnails, from real runs of each template's API workflow
(``example_workflows/api/<name>.json``) on the models installed here, in-process (ComfyUI's input validation and
node order, as tests/nodes/conftest.py's runner does). Not shipped code; re-run it whenever the embedded ShapeStory
demo model (or a template) changes::

    nice -n 15 env OMP_NUM_THREADS=2 .venv/bin/python tests/nodes/render_thumbnails.py [--only NAME] [--steps N]

Where a template names a model that is not installed (the training-free template's PixArt-XL-2 / T5-XXL, the
detected-layout template's Grounding DINO), the run swaps in what is installed and says so on the thumbnail: the
embedded ShapeStory demo model with a story in its vocabulary, and ShapeStory's own colour segmentation
(``lay2story_core.shapestory.segment.character_mask``) standing in for the detector. Everything else is the
template's own graph and settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from lay2story_core.comic import ComicStyle, compose_comic, load_font  # noqa: E402
from lay2story_core.layout_preview import fit_text, render_layout_preview  # noqa: E402
from lay2story_core.story import Layout, Story, Subject  # noqa: E402
from nodes import model_files  # noqa: E402
from nodes.image_utils import pil_to_image, to_pil_list  # noqa: E402
from nodes.registry import NODE_CLASS_MAPPINGS  # noqa: E402

logger = logging.getLogger("render_thumbnails")
EXAMPLES = os.path.join(ROOT, "example_workflows")
NAMES = ("lay2story_drawn_layout", "lay2story_detected_layout", "training_free_story", "comic_page",
         "lay2story_cast_two_characters")
THUMB_SIDE = 512
PANEL = ComicStyle(panel_width=248, margin=4, gutter=8, font_size=16)
# A six-frame story in the demo model's vocabulary, for templates whose own story it cannot draw.
DEMO_IDENTITY = "a red striped star"
DEMO_PROMPTS = ("on the grass", "in the sky", "on the beach", "on the road at night", "in a room",
                "on the grass at night")


def _runner():
    """tests/nodes/conftest.py's in-process runner (one runner for the tests and the thumbnails)."""
    path = os.path.join(ROOT, "tests", "nodes", "conftest.py")
    spec = importlib.util.spec_from_file_location("l2s_node_runner", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _of_type(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if v["class_type"] == class_type]


def adapt(name: str, prompt: dict) -> tuple[dict, list[str]]:
    """The template's prompt with uninstalled models swapped for installed ones, and notes saying what was swapped."""
    prompt = json.loads(json.dumps(prompt))
    notes: list[str] = []
    embedded = model_files.EMBEDDED_LABEL
    if embedded not in model_files.model_choices():
        raise SystemExit(f"the embedded ShapeStory demo model is not installed ({model_files.EMBEDDED_MODEL})")
    for key in _of_type(prompt, "L2S_ModelLoader"):
        inputs = prompt[key]["inputs"]
        if inputs["model"] not in model_files.model_choices():
            notes.append(f"ShapeStory demo model ({os.path.basename(inputs['model'])} not installed)")
            inputs.update(model=embedded, vae="auto")
    for key in _of_type(prompt, "L2S_TextEncoderLoader"):
        inputs = prompt[key]["inputs"]
        if inputs["text_encoder"] not in model_files.text_encoder_choices():
            inputs["text_encoder"] = embedded
    if notes:  # the demo model cannot draw the template's own story: give it one in its vocabulary
        for key in _of_type(prompt, "L2S_Story"):
            inputs = prompt[key]["inputs"]
            count = len([line for line in inputs["frame_prompts"].splitlines() if line.strip()])
            inputs.update(identity=DEMO_IDENTITY, frame_prompts="\n".join(DEMO_PROMPTS[:count]), width=64, height=64)
    for key in _of_type(prompt, "L2S_LayoutDetector"):
        if prompt[key]["inputs"]["detector"] not in model_files.detector_choices():
            notes.append("boxes by ShapeStory colour segmentation (Grounding DINO not installed)")
    return prompt, notes


def shapestory_boxes(images, story: Story, character: str, caption: str) -> Layout:
    """Where ``character`` landed in each frame, by ShapeStory's colour segmentation (the detector stand-in)."""
    from lay2story_core.shapestory.segment import character_mask

    frames = []
    for i, image in enumerate(to_pil_list(images, "images")):
        mask = character_mask(image, story, i, character)
        ys, xs = np.nonzero(mask)
        if len(xs) < 4:
            frames.append(())
            continue
        h, w = mask.shape
        box = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
        frames.append((Subject(character, box, caption or None),))
    return Layout(frames=tuple(frames), characters=(character,))


def run(prompt: dict, steps: int | None) -> tuple[dict, dict, dict]:
    """Runs the prompt in node order; a detector that is not installed is replaced by :func:`shapestory_boxes`."""
    runner = _runner()
    outputs, uis, sinks = {}, {}, {}
    for node_id in runner.topological_order(prompt):
        node = prompt[node_id]
        class_type = node["class_type"]
        inputs = {k: outputs[v[0]][v[1]] if runner.is_link(v) else v for k, v in node["inputs"].items()}
        if class_type == "L2S_StorySampler" and steps:
            inputs["steps"] = steps
        if class_type in runner.CORE_SINKS:
            sinks[node_id] = inputs
            continue
        if class_type == "L2S_LayoutDetector" and inputs["detector"] not in model_files.detector_choices():
            story_key = _of_type(prompt, "L2S_Story")[0]
            story = outputs[story_key][0]
            layout = shapestory_boxes(inputs["images"], story, inputs.get("character_id", "hero"), inputs["caption"])
            drawn = render_layout_preview(story.apply_layout(layout), to_pil_list(inputs["images"], "images"))
            outputs[node_id] = (layout, pil_to_image([d.resize(drawn[0].size) for d in drawn]))
            continue
        cls = NODE_CLASS_MAPPINGS[class_type]
        start = time.monotonic()
        result = getattr(cls(), cls.FUNCTION)(**inputs)
        logger.info("  %s %s: %.1f s", node_id, class_type, time.monotonic() - start)
        if isinstance(result, dict):
            uis[node_id], result = result.get("ui"), result["result"]
        outputs[node_id] = result
    return outputs, uis, sinks


def picture(name: str, prompt: dict, outputs: dict, sinks: dict) -> Image.Image:
    """What the template makes, as one picture (its preview / comic output, or its frames as a 2 x 2 page)."""
    if name in ("lay2story_drawn_layout", "lay2story_cast_two_characters"):
        panels = to_pil_list(outputs[_of_type(prompt, "L2S_LayoutPreview")[0]][0], "preview")
        return compose_comic(panels[:4], None, "four_panel", PANEL)[0]
    if name == "lay2story_detected_layout":
        story = outputs[_of_type(prompt, "L2S_LayoutToggle")[0]][0]
        final = to_pil_list(sinks[_of_type(prompt, "SaveImage")[0]]["images"], "images")
        drawn = render_layout_preview(story, final)
        return compose_comic(drawn[:4], None, "four_panel", PANEL)[0]
    if name == "comic_page":
        return to_pil_list(sinks[_of_type(prompt, "SaveImage")[0]]["images"], "images")[0]
    story = outputs[_of_type(prompt, "L2S_Story")[0]][0]
    frames = to_pil_list(sinks[_of_type(prompt, "SaveImage")[0]]["images"], "images")
    return compose_comic(frames[:4], [f.prompt for f in story.frames[:4]], "four_panel", PANEL)[0]


def with_notes(image: Image.Image, notes: list[str]) -> Image.Image:
    """The picture, fitted in 512 px, with a band naming what this run swapped (if anything)."""
    image = image.convert("RGB")
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    if not notes:
        return image
    font = load_font(13)
    band = 18 * len(notes) + 6
    out = Image.new("RGB", (image.width, image.height + band), (24, 24, 24))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, note in enumerate(notes):
        draw.text((6, image.height + 3 + 18 * k), fit_text(draw, note, font, image.width - 12), fill=(230, 230, 230),
                  font=font)
    out.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return out


def render(name: str, steps: int | None = None, out_dir: str = EXAMPLES) -> str:
    api = os.path.join(out_dir, "api", f"{name}.json")
    with open(api if os.path.isfile(api) else os.path.join(EXAMPLES, "api", f"{name}.json"), encoding="utf-8") as f:
        prompt, notes = adapt(name, json.load(f))
    start = time.monotonic()
    outputs, _, sinks = run(prompt, steps)
    image = with_notes(picture(name, prompt, outputs, sinks), notes)
    path = os.path.join(out_dir, f"{name}.jpg")
    image.save(f"{path}.tmp", format="JPEG", quality=90)
    os.replace(f"{path}.tmp", path)
    logger.info("%s: %dx%d in %.0f s%s", os.path.relpath(path, ROOT), *image.size, time.monotonic() - start,
                f" ({'; '.join(notes)})" if notes else "")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=NAMES, action="append", help="render only this template (repeatable)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the template's own)")
    parser.add_argument("--out", default=EXAMPLES, help="output folder (default: example_workflows/)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.only or NAMES:
        print(os.path.relpath(render(name, args.steps, args.out), ROOT))


if __name__ == "__main__":
    main()
