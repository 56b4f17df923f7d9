"""Writes ``example_workflows/``: each example as a ComfyUI UI-format workflow (``<name>.json``, shown in ComfyUI's
template browser), its ``.jpg`` thumbnail, and an API-format copy (``api/<name>.json``) that the tests run.

Not shipped code: run it from the repository root after changing a node's inputs or an example::

    .venv/bin/python tests/nodes/make_example_workflows.py [--no-thumbnails]

Both formats come from the one description below, with widget values in each node's ``INPUT_TYPES`` order (plus
the frontend's ``control_after_generate`` value after a seed). Thumbnails come from real runs of each written
example on the installed models (tests/nodes/render_thumbnails.py, which can also be run alone); those of the
story-patched MODEL examples (core loaders and samplers) from runs through a real ComfyUI server on random-weight
models (tests/nodes/story_server.py, also runnable alone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from lay2story_core.cli import EMBEDDED_MODEL  # noqa: E402
from lay2story_core.pipelines import PipelineManifest, scheduler_name  # noqa: E402
from lay2story_core.story import Layout, Story, Subject  # noqa: E402
from nodes.model_files import EMBEDDED_LABEL  # noqa: E402
from nodes.registry import NODE_CLASS_MAPPINGS  # noqa: E402

OUT_DIR = os.path.join(ROOT, "example_workflows")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
# ComfyUI core nodes the examples end in (their definitions, as ComfyUI's /object_info gives them).
CORE_NODES = {
    "SaveImage": {"sockets": [("images", "IMAGE")], "widgets": ["filename_prefix"], "outputs": []},
    "PreviewImage": {"sockets": [("images", "IMAGE")], "widgets": [], "outputs": []},
    # the core loaders a user keeps PixArt, T5 and the VAE in (ComfyUI's nodes.py)
    "UNETLoader": {"sockets": [], "widgets": ["unet_name", "weight_dtype"], "outputs": [("MODEL", "MODEL")]},
    "CLIPLoader": {"sockets": [], "widgets": ["clip_name", "type", "device"], "outputs": [("CLIP", "CLIP")]},
    "VAELoader": {"sockets": [], "widgets": ["vae_name"], "outputs": [("VAE", "VAE")]},
    "VAEDecode": {"sockets": [("samples", "LATENT"), ("vae", "VAE")], "widgets": [], "outputs": [("IMAGE", "IMAGE")]},
    # the core loaders and samplers of the story-patched MODEL examples (nodes.py; comfy_extras/nodes_flux.py and
    # nodes_custom_sampler.py), widgets in their INPUT_TYPES order; "controls": a seed the frontend follows with
    # its control_after_generate value
    "CheckpointLoaderSimple": {"sockets": [], "widgets": ["ckpt_name"],
                               "outputs": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]},
    "DualCLIPLoader": {"sockets": [], "widgets": ["clip_name1", "clip_name2", "type", "device"],
                       "outputs": [("CLIP", "CLIP")], "defaults": {"device": "default"}},
    "KSampler": {"sockets": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                             ("latent_image", "LATENT")],
                 "widgets": ["seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
                 "outputs": [("LATENT", "LATENT")], "controls": ("seed",), "defaults": {"denoise": 1.0}},
    "FluxGuidance": {"sockets": [("conditioning", "CONDITIONING")], "widgets": ["guidance"],
                     "outputs": [("CONDITIONING", "CONDITIONING")], "defaults": {"guidance": 3.5}},
    "RandomNoise": {"sockets": [], "widgets": ["noise_seed"], "outputs": [("NOISE", "NOISE")],
                    "controls": ("noise_seed",)},
    "BasicGuider": {"sockets": [("model", "MODEL"), ("conditioning", "CONDITIONING")], "widgets": [],
                    "outputs": [("GUIDER", "GUIDER")]},
    "KSamplerSelect": {"sockets": [], "widgets": ["sampler_name"], "outputs": [("SAMPLER", "SAMPLER")]},
    "BasicScheduler": {"sockets": [("model", "MODEL")], "widgets": ["scheduler", "steps", "denoise"],
                       "outputs": [("SIGMAS", "SIGMAS")], "defaults": {"denoise": 1.0}},
    "SamplerCustomAdvanced": {"sockets": [("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                                          ("sigmas", "SIGMAS"), ("latent_image", "LATENT")], "widgets": [],
                              "outputs": [("output", "LATENT"), ("denoised_output", "LATENT")]},
}
SEED_CONTROL = "fixed"
# Nodes that need more room than the default 320 px wide box (the layout editor's canvas, the preview's frames).
NODE_SIZES = {"L2S_LayoutEditor": (560, 700), "L2S_LayoutPreview": (440, 520)}


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)  # input name -> value (others: the INPUT_TYPES default)
    links: dict = field(default_factory=dict)  # input name -> (source node id, output slot)
    title: str | None = None


# --------------------------------------------------------------------------------------------- node definitions
def node_spec(class_type: str) -> dict:
    """``sockets`` [(name, type)], ``widgets`` [names], ``outputs`` [(name, type)] and widget ``defaults``."""
    if class_type in CORE_NODES:
        entry = CORE_NODES[class_type]
        defaults = {name: None for name in entry["widgets"]} | {"filename_prefix": "ComfyUI"}
        defaults |= entry.get("defaults", {})
        options = {name: {"control_after_generate": True} for name in entry.get("controls", ())}
        return {"sockets": entry["sockets"], "widgets": entry["widgets"], "outputs": entry["outputs"],
                "defaults": defaults, "options": options}
    cls = NODE_CLASS_MAPPINGS[class_type]
    sockets, widgets, defaults, options = [], [], {}, {}
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, (kind, opts) in spec.get(section, {}).items():
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append(name)
                defaults[name] = opts.get("default", kind[0] if isinstance(kind, list) and kind else None)
                options[name] = opts
            else:
                sockets.append((name, kind))
    outputs = list(zip(cls.RETURN_NAMES, cls.RETURN_TYPES))
    return {"sockets": sockets, "widgets": widgets, "outputs": outputs, "defaults": defaults, "options": options}


def widget_values(node: Node) -> list:
    spec = node_spec(node.type)
    unknown = set(node.widgets) - set(spec["widgets"])
    if unknown:
        raise ValueError(f"node {node.id} ({node.type}): unknown widgets {sorted(unknown)}")
    values = []
    for name in spec["widgets"]:
        values.append(node.widgets.get(name, spec["defaults"][name]))
        if spec["options"].get(name, {}).get("control_after_generate"):
            values.append(SEED_CONTROL)
    return values


# -------------------------------------------------------------------------------------------------- the formats
def to_api(nodes: list[Node]) -> dict:
    prompt = {}
    for node in nodes:
        spec = node_spec(node.type)
        inputs = {name: node.widgets.get(name, spec["defaults"][name]) for name in spec["widgets"]}
        inputs.update({name: [str(src), slot] for name, (src, slot) in node.links.items()})
        entry = {"class_type": node.type, "inputs": inputs}
        if node.title:
            entry["_meta"] = {"title": node.title}
        prompt[str(node.id)] = entry
    return prompt


def to_ui(nodes: list[Node], groups: list[dict] | None = None) -> dict:
    by_id = {n.id: n for n in nodes}
    links, incoming, outgoing = [], {}, {}
    for node in nodes:
        sockets = [name for name, _ in node_spec(node.type)["sockets"]]
        for name, (src, slot) in node.links.items():
            link_id = len(links) + 1
            kind = node_spec(by_id[src].type)["outputs"][slot][1]
            links.append([link_id, src, slot, node.id, sockets.index(name), kind])
            incoming[(node.id, name)] = link_id
            outgoing.setdefault((src, slot), []).append(link_id)
    ui_nodes = []
    for order, node in enumerate(nodes):
        spec = node_spec(node.type)
        entry = {
            "id": node.id,
            "type": node.type,
            "pos": list(node.pos),
            "size": list(NODE_SIZES.get(node.type, (320, 60 + 26 * (len(spec["widgets"]) + len(spec["sockets"]))))),
            "flags": {},
            "order": order,
            "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": incoming.get((node.id, name))}
                       for name, kind in spec["sockets"]],
            "outputs": [{"name": name, "type": kind, "links": outgoing.get((node.id, slot)) or None,
                         "slot_index": slot} for slot, (name, kind) in enumerate(spec["outputs"])],
            "properties": {"Node name for S&R": node.type},
            "widgets_values": widget_values(node),
        }
        if node.title:
            entry["title"] = node.title
        ui_nodes.append(entry)
    return {
        "last_node_id": max(n.id for n in nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": groups or [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


# ---------------------------------------------------------------------------------------------------- examples
SHAPE_IDENTITY = "a red striped star"
SHAPE_PROMPTS = ("on the grass", "in the sky", "on the beach at night", "in a room")
DRAWN_LAYOUT = Layout(
    frames=(
        (Subject("hero", (0.08, 0.45, 0.48, 0.85), "the red striped star, medium, at the bottom left"),),
        (Subject("hero", (0.55, 0.1, 0.9, 0.45), "the red striped star, medium, at the top right"),),
        (Subject("hero", (0.25, 0.25, 0.85, 0.85), "the red striped star, large, in the middle"),),
        (Subject("hero", (0.6, 0.55, 0.9, 0.85)),),
    ),
    characters=("hero",),
)
TWO_CHARACTER_STORY = Story.from_dict({
    "version": 1, "width": 64, "height": 64, "negative_prompt": "",
    "characters": [{"id": "hero", "identity": "a red striped star"},
                   {"id": "friend", "identity": "a blue dotted circle"}],
    "frames": [
        {"prompt": "on the grass", "subjects": [
            {"character": "hero", "box": [0.05, 0.4, 0.45, 0.8],
             "caption": "the red striped star, medium, on the left"},
            {"character": "friend", "box": [0.55, 0.45, 0.9, 0.8]}]},
        {"prompt": "in the sky", "subjects": [{"character": "hero", "box": [0.3, 0.1, 0.7, 0.5]}]},
        {"prompt": "on the beach", "subjects": [{"character": "friend", "box": [0.35, 0.4, 0.75, 0.8]}]},
        {"prompt": "on the road at night", "subjects": [
            {"character": "hero", "box": [0.1, 0.5, 0.4, 0.8]}, {"character": "friend", "box": [0.6, 0.5, 0.9, 0.8]}]},
        {"prompt": "in a room", "subjects": [{"character": "hero", "box": [0.25, 0.3, 0.75, 0.8]}]},
        {"prompt": "on the grass at night", "subjects": [
            {"character": "hero", "box": [0.5, 0.2, 0.9, 0.6]}, {"character": "friend", "box": [0.1, 0.5, 0.4, 0.8]}]},
    ],
})
THREE_CHARACTER_STORY = Story.from_dict({
    "version": 1, "width": 512, "height": 512, "negative_prompt": "",
    "characters": [{"id": "fox", "identity": "a small red fox wearing a blue scarf"},
                   {"id": "owl", "identity": "a grey owl with round glasses"},
                   {"id": "bear", "identity": "a big brown bear in a green coat"}],
    "frames": [
        {"prompt": "three friends at a picnic in a meadow", "subjects": [
            {"character": "fox", "box": [0.05, 0.45, 0.35, 0.9], "caption": "the fox waving"},
            {"character": "owl", "box": [0.4, 0.1, 0.6, 0.4]},
            {"character": "bear", "box": [0.6, 0.35, 0.95, 0.95]}]},
        {"prompt": "crossing a wooden bridge", "subjects": [
            {"character": "bear", "box": [0.1, 0.3, 0.5, 0.9]}, {"character": "fox", "box": [0.55, 0.5, 0.8, 0.9]}]},
        {"prompt": "reading under a tree at night", "subjects": [{"character": "owl", "box": [0.3, 0.2, 0.7, 0.7]}]},
        {"prompt": "around a campfire", "subjects": [
            {"character": "owl", "box": [0.05, 0.2, 0.3, 0.5]}, {"character": "fox", "box": [0.35, 0.5, 0.6, 0.9]},
            {"character": "bear", "box": [0.65, 0.3, 0.95, 0.9]}]},
    ],
})
FOX_IDENTITY = "a small red fox wearing a blue knitted scarf, cartoon style"
FOX_PROMPTS = (
    "reading a book under a big oak tree on a sunny afternoon",
    "walking along a forest path at dusk",
    "standing on a wooden bridge over a river",
    "catching fireflies in a meadow at night",
    "eating soup at a kitchen table",
    "asleep in a cozy burrow by candlelight",
)


def _loaders(model: str, text_encoder: str, subject_branch: str = "auto", vae: str = "auto") -> list[Node]:
    return [
        Node(1, "L2S_ModelLoader", (40, 60), {"model": model, "subject_branch": subject_branch, "vae": vae}),
        Node(2, "L2S_TextEncoderLoader", (40, 300), {"text_encoder": text_encoder}),
    ]


def _demo_sampling() -> dict:
    """The embedded demo's recommended steps and guidance (its lay2story.json) and its sampler (its scheduler
    folder), as sampler widgets."""
    sampling = PipelineManifest.read(EMBEDDED_MODEL).sampling
    config = json.loads((EMBEDDED_MODEL / "scheduler" / "scheduler_config.json").read_text())
    return {"steps": sampling.num_inference_steps, "cfg": sampling.guidance_scale,
            "scheduler": scheduler_name(config) or "dpmsolver++"}


def _sampler(node_id: int, pos, story_link, seed: int, **widgets) -> Node:
    """A sampler on the loaders of :func:`_loaders` (the embedded demo's settings unless ``widgets`` say others)."""
    return Node(node_id, "L2S_StorySampler", pos, {"seed": seed, **_demo_sampling(), **widgets},
                {"model": (1, 0), "text_encoder": (2, 0), "story": story_link})


def example_drawn_layout() -> list[Node]:
    return _loaders(EMBEDDED_LABEL, EMBEDDED_LABEL) + [
        Node(3, "L2S_Story", (40, 540), {"identity": SHAPE_IDENTITY, "frame_prompts": "\n".join(SHAPE_PROMPTS),
                                         "negative_prompt": "", "width": 64, "height": 64}),
        Node(4, "L2S_LayoutEditor", (420, 60), {"layout_json": DRAWN_LAYOUT.to_json(indent=None)},
             {"story": (3, 0)}),
        _sampler(5, (1020, 60), (4, 1), 7, mode="lay2story"),
        Node(6, "L2S_LayoutPreview", (1420, 360), {}, {"story": (4, 1), "images": (5, 0)}),
        Node(7, "SaveImage", (1420, 60), {"filename_prefix": "lay2story/drawn_layout"}, {"images": (5, 0)}),
    ]


CAST = (("hero", "a red striped star", ("star", "red", "stripes")),
        ("friend", "a blue dotted circle", ("circle", "blue", "dots")))
# Who is in each frame (a [..] prefix; none: both) and where: boxes for both characters in the layout editor.
CAST_FRAMES = (
    ("[hero, friend] on the grass", {"hero": (0.05, 0.4, 0.45, 0.8), "friend": (0.55, 0.45, 0.9, 0.8)}),
    ("[hero] in the sky", {"hero": (0.3, 0.1, 0.7, 0.5)}),
    ("[friend] on the beach at night", {"friend": (0.35, 0.4, 0.75, 0.8)}),
    ("in a room", {"hero": (0.08, 0.45, 0.43, 0.8), "friend": (0.55, 0.3, 0.9, 0.65)}),
)


def cast_layout() -> Layout:
    """The boxes of :data:`CAST_FRAMES`, each with the subject caption the demo was trained on."""
    from lay2story_core.shapestory.vocab import character_spec, subject_caption

    specs = {cid: character_spec(*spec) for cid, _, spec in CAST}
    return Layout(frames=tuple(tuple(Subject(cid, box, subject_caption(specs[cid], box)) for cid, box in boxes.items())
                               for _, boxes in CAST_FRAMES), characters=tuple(cid for cid, _, _ in CAST))


def example_cast_two_characters() -> list[Node]:
    (hero_id, hero, _), (friend_id, friend, _) = CAST
    return _loaders(EMBEDDED_LABEL, EMBEDDED_LABEL) + [
        Node(3, "L2S_Character", (40, 540), {"character_id": hero_id, "identity": hero}),
        Node(4, "L2S_Character", (40, 800), {"character_id": friend_id, "identity": friend}, {"cast": (3, 0)}),
        Node(5, "L2S_Story", (40, 1060), {"frame_prompts": "\n".join(line for line, _ in CAST_FRAMES),
                                          "negative_prompt": "", "width": 64, "height": 64}, {"cast": (4, 0)}),
        Node(6, "L2S_LayoutEditor", (420, 60), {"layout_json": cast_layout().to_json(indent=None)},
             {"story": (5, 0)}),
        _sampler(7, (1020, 60), (6, 1), 21, mode="lay2story"),
        Node(8, "L2S_LayoutPreview", (1420, 360), {}, {"story": (6, 1), "images": (7, 0)}),
        Node(9, "L2S_ComicPage", (1420, 900), {"layout": "four_panel", "panel_width": 256, "font_size": 18},
             {"images": (7, 0), "story": (6, 1)}),
        Node(10, "SaveImage", (1420, 60), {"filename_prefix": "lay2story/cast_two_characters"}, {"images": (9, 0)}),
    ]


def example_detected_layout() -> list[Node]:
    return _loaders(EMBEDDED_LABEL, EMBEDDED_LABEL) + [
        Node(3, "L2S_Story", (40, 540), {"identity": SHAPE_IDENTITY, "frame_prompts": "\n".join(SHAPE_PROMPTS),
                                         "negative_prompt": "", "width": 64, "height": 64}),
        _sampler(4, (420, 60), (3, 0), 11, mode="lay2story"),
        Node(5, "L2S_LayoutDetector", (820, 60), {"detector": "grounding-dino-tiny", "prompt": "the red star",
                                                  "caption": "the red striped star"}, {"images": (4, 0)}),
        Node(6, "L2S_LayoutToggle", (820, 420), {"boxes": True, "subject_captions": True},
             {"story": (3, 0), "layout": (5, 0)}),
        _sampler(7, (1220, 60), (6, 0), 12, mode="lay2story"),
        Node(8, "PreviewImage", (1220, 500), {}, {"images": (5, 1)}),
        Node(9, "SaveImage", (1620, 60), {"filename_prefix": "lay2story/detected_layout"}, {"images": (7, 0)}),
    ]


def example_training_free() -> list[Node]:
    return _loaders("checkpoints/PixArt-XL-2-512x512.pth", "text_encoders/t5xxl_fp16.safetensors",
                    subject_branch="none", vae="vae/vae-ft-mse-840000-ema-pruned.safetensors") + [
        Node(3, "L2S_Story", (40, 540), {"identity": FOX_IDENTITY, "frame_prompts": "\n".join(FOX_PROMPTS),
                                         "width": 512, "height": 512}),
        _sampler(4, (420, 60), (3, 0), 2025, mode="training_free", chunk_size=3, identity_frames=3, steps=25, cfg=4.5),
        Node(5, "SaveImage", (820, 60), {"filename_prefix": "lay2story/training_free"}, {"images": (4, 0)}),
    ]


def example_comic_page() -> list[Node]:
    return _loaders(EMBEDDED_LABEL, EMBEDDED_LABEL) + [
        Node(3, "L2S_StoryFromJSON", (40, 540), {"story_json": TWO_CHARACTER_STORY.to_json(indent=2)}),
        _sampler(4, (420, 60), (3, 0), 3, mode="lay2story"),
        Node(5, "L2S_ComicPage", (820, 60), {"layout": "classic", "panel_width": 256, "font_size": 20},
             {"images": (4, 0), "story": (3, 0)}),
        Node(6, "L2S_ComicPage", (820, 520), {"layout": "four_panel", "panel_width": 256, "font_size": 18,
                                              "captions": "Hero meets Friend.\nHero flies.\nFriend waits.\n"
                                                          "Together again.\nHome.\nGood night."},
             {"images": (4, 0)}),
        Node(7, "SaveImage", (1220, 60), {"filename_prefix": "lay2story/comic_classic"}, {"images": (5, 0)}),
        Node(8, "PreviewImage", (1220, 520), {}, {"images": (6, 0)}),
    ]


def _core_loaders(unet: str, vae: str) -> list[Node]:
    """PixArt, T5 and the VAE from ComfyUI's own loaders, as users keep them (diffusion_models/, text_encoders/,
    vae/); nodes 1 (MODEL), 2 (CLIP), 3 (VAE)."""
    return [
        Node(1, "UNETLoader", (40, 60), {"unet_name": unet, "weight_dtype": "default"}),
        Node(2, "CLIPLoader", (40, 220), {"clip_name": "t5xxl_fp16.safetensors", "type": "pixart",
                                          "device": "default"}),
        Node(3, "VAELoader", (40, 400), {"vae_name": vae}),
    ]


def _native_sampler(node_id: int, pos, story_link, seed: int, branch_link=None, **widgets) -> Node:
    links = {"story": story_link, "pixart": (1, 0), "clip": (2, 0), "vae": (3, 0)}
    if branch_link is not None:
        links["subject_branch"] = branch_link
    return Node(node_id, "L2S_StorySampler", pos, {"seed": seed, **widgets}, links)


def example_core_loaders() -> list[Node]:
    return _core_loaders("PixArt-XL-2-512x512.pth", "vae-ft-mse-840000-ema-pruned.safetensors") + [
        Node(4, "L2S_SubjectBranchLoader", (40, 520), {"subject_branch": "lay2story/tiny_branch"}),
        Node(5, "L2S_StoryFromJSON", (40, 660), {"story_json": THREE_CHARACTER_STORY.to_json(indent=2)}),
        _native_sampler(6, (440, 60), (5, 0), 5, branch_link=(4, 0), mode="lay2story", width=512, height=512),
        Node(7, "VAEDecode", (860, 60), {}, {"samples": (6, 1), "vae": (3, 0)}),
        Node(8, "SaveImage", (1100, 60), {"filename_prefix": "lay2story/core_loaders"}, {"images": (7, 0)}),
    ]


def example_core_loaders_training_free() -> list[Node]:
    return _core_loaders("PixArt-XL-2-512x512.pth", "vae-ft-mse-840000-ema-pruned.safetensors") + [
        Node(4, "L2S_Story", (40, 520), {"identity": FOX_IDENTITY, "frame_prompts": "\n".join(FOX_PROMPTS[:4]),
                                         "width": 512, "height": 512}),
        _native_sampler(5, (440, 60), (4, 0), 2025, mode="training_free"),
        Node(6, "VAEDecode", (860, 60), {}, {"samples": (5, 1), "vae": (3, 0)}),
        Node(7, "SaveImage", (1100, 60), {"filename_prefix": "lay2story/core_training_free"}, {"images": (6, 0)}),
    ]


# ------------------------------------------------------------------- stories on a story-patched MODEL (issue 25)
STORY_NEGATIVE = "blurry, low quality, deformed, text, watermark"
SILVER_IDENTITY = "a young woman with short silver hair and a green hooded cloak, watercolor illustration"
SILVER_PROMPTS = ("waking up in a small attic room at dawn", "buying bread at a busy market",
                  "reading a map on a windy hill", "watching the sunset from a lighthouse")
RAIN_CAST = (("girl", "a girl with short red hair in a yellow raincoat", "the girl in the yellow raincoat"),
             ("robot", "a small round white robot with glowing blue eyes", "the small white robot"))
RAIN_FRAMES = (
    ("[girl, robot] walking in the rain on a city street",
     {"girl": (0.05, 0.25, 0.45, 0.95), "robot": (0.55, 0.55, 0.85, 0.95)}),
    ("[robot] looking through a shop window", {"robot": (0.3, 0.35, 0.7, 0.9)}),
    ("[girl] sitting on a park bench reading a book", {"girl": (0.25, 0.2, 0.75, 0.95)}),
    ("sharing an umbrella at a bus stop at night",
     {"girl": (0.08, 0.2, 0.48, 0.95), "robot": (0.55, 0.5, 0.88, 0.95)}),
)
SEA_STORY = Story.from_dict({
    "version": 1, "width": 1024, "height": 1024, "negative_prompt": "",
    "characters": [{"id": "captain", "identity": "an old sea captain with a white beard and a navy blue coat"},
                   {"id": "parrot", "identity": "a small green parrot with a red beak"}],
    "frames": [
        {"prompt": "on the deck of a sailing ship in a storm", "subjects": [
            {"character": "captain", "box": [0.1, 0.2, 0.55, 0.95], "caption": "the captain holding the wheel"},
            {"character": "parrot", "box": [0.6, 0.15, 0.85, 0.45]}]},
        {"prompt": "flying over a calm blue sea", "subjects": [{"character": "parrot", "box": [0.3, 0.2, 0.7, 0.6]}]},
        {"prompt": "reading a treasure map by lantern light", "subjects": [
            {"character": "captain", "box": [0.2, 0.15, 0.8, 0.95]}]},
        {"prompt": "on a sandy beach with palm trees", "subjects": [
            {"character": "captain", "box": [0.05, 0.25, 0.5, 0.95]},
            {"character": "parrot", "box": [0.55, 0.3, 0.8, 0.6], "caption": "the parrot on a treasure chest"}]},
    ],
})


def rain_layout() -> Layout:
    """The boxes of :data:`RAIN_FRAMES`, each with its character's subject caption (drawn in the layout editor)."""
    captions = {cid: caption for cid, _, caption in RAIN_CAST}
    return Layout(frames=tuple(tuple(Subject(cid, box, captions[cid]) for cid, box in boxes.items())
                               for _, boxes in RAIN_FRAMES), characters=tuple(cid for cid, _, _ in RAIN_CAST))


def _story_model_nodes(first: int, model, text_clip, story, x: int = 460, **apply_links) -> list[Node]:
    """Story conditioning (per-frame prompts through ``text_clip``), Apply Story (``apply_links``: its optional
    inputs) and Empty Story Latent, at ids ``first`` .. ``first + 2``."""
    return [
        Node(first, "L2S_StoryConditioning", (x, 60), {}, {"clip": text_clip, "story": story}),
        Node(first + 1, "L2S_ApplyStory", (x, 260), {}, {"model": model, "story": story, **apply_links}),
        Node(first + 2, "L2S_EmptyStoryLatent", (x, 640), {}, {"story": story, "model": model}),
    ]


def _ksampler(node_id: int, model, conditioning: int, latent, seed: int, pos=(880, 60), **widgets) -> Node:
    return Node(node_id, "KSampler", pos, {"seed": seed, **widgets},
                {"model": model, "positive": (conditioning, 0), "negative": (conditioning, 1), "latent_image": latent})


def example_story_sdxl_comic() -> list[Node]:
    return [
        Node(1, "CheckpointLoaderSimple", (40, 60), {"ckpt_name": "sd_xl_base_1.0.safetensors"}),
        Node(2, "L2S_Story", (40, 260), {"identity": SILVER_IDENTITY, "frame_prompts": "\n".join(SILVER_PROMPTS),
                                         "negative_prompt": STORY_NEGATIVE, "width": 1024, "height": 1024}),
        *_story_model_nodes(3, (1, 0), (1, 1), (2, 0)),
        _ksampler(6, (4, 0), 3, (5, 0), 2024, steps=25, cfg=6.0, sampler_name="dpmpp_2m", scheduler="karras"),
        Node(7, "VAEDecode", (1280, 60), {}, {"samples": (6, 0), "vae": (1, 2)}),
        Node(8, "L2S_ComicPage", (1280, 200), {"layout": "classic", "panel_width": 512, "font_size": 24},
             {"images": (7, 0), "story": (2, 0)}),
        Node(9, "SaveImage", (1680, 60), {"filename_prefix": "lay2story/sdxl_comic"}, {"images": (8, 0)}),
    ]


def example_story_sd15_two_characters() -> list[Node]:
    (girl_id, girl, _), (robot_id, robot, _) = RAIN_CAST
    return [
        Node(1, "CheckpointLoaderSimple", (40, 60), {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"}),
        Node(2, "L2S_Character", (40, 260), {"character_id": girl_id, "identity": girl}),
        Node(3, "L2S_Character", (40, 520), {"character_id": robot_id, "identity": robot}, {"cast": (2, 0)}),
        Node(4, "L2S_Story", (40, 780), {"frame_prompts": "\n".join(line for line, _ in RAIN_FRAMES),
                                         "negative_prompt": STORY_NEGATIVE, "width": 512, "height": 512},
             {"cast": (3, 0)}),
        Node(5, "L2S_LayoutEditor", (400, 60), {"layout_json": rain_layout().to_json(indent=None)},
             {"story": (4, 0)}),
        *_story_model_nodes(6, (1, 0), (1, 1), (5, 1), x=1000, clip=(1, 1)),
        _ksampler(9, (7, 0), 6, (8, 0), 7, (1380, 60), steps=25, cfg=7.0, sampler_name="dpmpp_2m",
                  scheduler="karras"),
        Node(10, "VAEDecode", (1380, 420), {}, {"samples": (9, 0), "vae": (1, 2)}),
        Node(11, "L2S_LayoutPreview", (1760, 420), {}, {"story": (5, 1), "images": (10, 0)}),
        Node(12, "L2S_ComicPage", (2240, 200), {"layout": "four_panel", "panel_width": 256, "font_size": 18},
             {"images": (10, 0), "story": (5, 1)}),
        Node(13, "SaveImage", (2240, 60), {"filename_prefix": "lay2story/sd15_two_characters"},
             {"images": (12, 0)}),
    ]


def example_story_flux_boxes() -> list[Node]:
    return [
        Node(1, "UNETLoader", (40, 60), {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}),
        Node(2, "DualCLIPLoader", (40, 200), {"clip_name1": "clip_l.safetensors",
                                              "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}),
        Node(3, "VAELoader", (40, 380), {"vae_name": "ae.safetensors"}),
        Node(4, "L2S_StoryFromJSON", (40, 500), {"story_json": SEA_STORY.to_json(indent=2)}),
        *_story_model_nodes(5, (1, 0), (2, 0), (4, 0)),
        Node(8, "FluxGuidance", (880, 60), {"guidance": 3.5}, {"conditioning": (5, 0)}),
        Node(9, "BasicGuider", (880, 200), {}, {"model": (6, 0), "conditioning": (8, 0)}),
        Node(10, "RandomNoise", (880, 320), {"noise_seed": 42}),
        Node(11, "KSamplerSelect", (880, 440), {"sampler_name": "euler"}),
        Node(12, "BasicScheduler", (880, 560), {"scheduler": "simple", "steps": 20}, {"model": (6, 0)}),
        Node(13, "SamplerCustomAdvanced", (1280, 60), {},
             {"noise": (10, 0), "guider": (9, 0), "sampler": (11, 0), "sigmas": (12, 0), "latent_image": (7, 0)}),
        Node(14, "VAEDecode", (1280, 300), {}, {"samples": (13, 0), "vae": (3, 0)}),
        Node(15, "L2S_ComicPage", (1680, 200), {"layout": "four_panel", "panel_width": 512, "font_size": 24},
             {"images": (14, 0), "story": (4, 0)}),
        Node(16, "SaveImage", (1680, 60), {"filename_prefix": "lay2story/flux_boxes"}, {"images": (15, 0)}),
    ]


def example_story_pixart_lay2story_ksampler() -> list[Node]:
    return _core_loaders("PixArt-XL-2-512x512.pth", "vae-ft-mse-840000-ema-pruned.safetensors") + [
        Node(4, "L2S_SubjectBranchLoader", (40, 520), {"subject_branch": "lay2story/tiny_branch"}),
        Node(5, "L2S_StoryFromJSON", (40, 660), {"story_json": THREE_CHARACTER_STORY.to_json(indent=2)}),
        *_story_model_nodes(6, (1, 0), (2, 0), (5, 0), clip=(2, 0), subject_branch=(4, 0)),
        _ksampler(9, (7, 0), 6, (8, 0), 5, steps=20, cfg=4.5, sampler_name="dpmpp_2m", scheduler="normal"),
        Node(10, "VAEDecode", (1280, 60), {}, {"samples": (9, 0), "vae": (3, 0)}),
        Node(11, "SaveImage", (1520, 60), {"filename_prefix": "lay2story/pixart_ksampler"}, {"images": (10, 0)}),
    ]


EXAMPLES = {
    "lay2story_drawn_layout": example_drawn_layout,
    "lay2story_detected_layout": example_detected_layout,
    "training_free_story": example_training_free,
    "comic_page": example_comic_page,
    "lay2story_core_loaders": example_core_loaders,
    "training_free_core_loaders": example_core_loaders_training_free,
    "lay2story_cast_two_characters": example_cast_two_characters,
    "story_sdxl_comic": example_story_sdxl_comic,
    "story_sd15_two_characters": example_story_sd15_two_characters,
    "story_flux_boxes": example_story_flux_boxes,
    "story_pixart_lay2story_ksampler": example_story_pixart_lay2story_ksampler,
}
# Templates whose models only a real ComfyUI installation has (core loaders build full-size T5-XXL): their
# thumbnail is a card of the graph, not a run (core_loader_card below).
CORE_LOADER_EXAMPLES = ("lay2story_core_loaders", "training_free_core_loaders")
# Templates on a story-patched MODEL under ComfyUI's own samplers: their thumbnails come from runs through a real
# ComfyUI server (tests/nodes/story_server.py), not from the in-process runner.
STORY_MODEL_EXAMPLES = ("story_sdxl_comic", "story_sd15_two_characters", "story_flux_boxes",
                        "story_pixart_lay2story_ksampler")


# One line each: ComfyUI's template browser shows a custom-node template's file name as its title and description
# (frontend 1.58 has no field for more), so the line is the title of a group around the workflow's nodes.
DESCRIPTIONS = {
    "lay2story_drawn_layout": "Draw where the character stands in each frame, then sample the story (ShapeStory "
                              "demo model); the run's frames show behind the boxes",
    "lay2story_detected_layout": "Sample a draft, detect where the character landed, and sample again with that "
                                 "layout",
    "training_free_story": "One consistent character across six frames with plain PixArt-alpha, no training "
                           "(training-free mode)",
    "comic_page": "Two characters in six frames, typeset as a classic comic page and as 2 x 2 pages",
    "lay2story_core_loaders": "PixArt, T5 and VAE from ComfyUI's core loaders with a Lay2Story subject branch: "
                              "three characters, each in its own boxes; LATENT out to VAE Decode",
    "training_free_core_loaders": "Plain PixArt-alpha from ComfyUI's core loaders, consistent across frames "
                                  "without training; LATENT out to VAE Decode",
    "lay2story_cast_two_characters": "Two characters from chained Character nodes, frame lines saying who is in "
                                     "each frame, a box for each in the layout editor (ShapeStory demo model)",
    "story_sdxl_comic": "StoryDiffusion on your SDXL checkpoint: Apply Story patches the MODEL, core KSampler "
                        "samples all frames as one batch, then a classic comic page",
    "story_sd15_two_characters": "Two characters on an SD1.5 checkpoint: each in its drawn box, with its own "
                                 "caption there (CLIP into Apply Story), sampled by core KSampler",
    "story_flux_boxes": "A story with boxes on FLUX.1: story attention on FLUX's joint attention, sampled by "
                        "SamplerCustomAdvanced with FluxGuidance",
    "story_pixart_lay2story_ksampler": "Lay2Story on PixArt-alpha from ComfyUI's core loaders: the subject branch "
                                       "in Apply Story, three characters in their boxes, core KSampler",
}


def described(ui: dict, text: str) -> dict:
    """The UI workflow with ``text`` as the title of a group around all its nodes (and in ``extra.description``)."""
    x0 = min(n["pos"][0] for n in ui["nodes"]) - 20
    y0 = min(n["pos"][1] for n in ui["nodes"]) - 80
    x1 = max(n["pos"][0] + n["size"][0] for n in ui["nodes"]) + 20
    y1 = max(n["pos"][1] + n["size"][1] for n in ui["nodes"]) + 20
    group = {"title": text, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": "#3f789e", "font_size": 22, "flags": {}}
    return {**ui, "groups": [*ui["groups"], group], "extra": {**ui["extra"], "description": text}}


def write(out_dir: str = OUT_DIR, thumbnails: bool = True) -> list[str]:
    written, story_model_names = [], []
    os.makedirs(os.path.join(out_dir, "api"), exist_ok=True)
    for name, build in EXAMPLES.items():
        nodes = build()
        for path, data in ((os.path.join(out_dir, f"{name}.json"), described(to_ui(nodes), DESCRIPTIONS[name])),
                           (os.path.join(out_dir, "api", f"{name}.json"), to_api(nodes))):
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, ensure_ascii=False)
                f.write("\n")
            os.replace(tmp, path)
            written.append(path)
        if thumbnails and name in STORY_MODEL_EXAMPLES:
            story_model_names.append(name)
        elif thumbnails and name in CORE_LOADER_EXAMPLES:
            written.append(core_loader_card(name, nodes, out_dir))
        elif thumbnails:  # from a real run of the example just written (render_thumbnails.py, beside this script)
            from render_thumbnails import render

            written.append(render(name, out_dir=out_dir))
    if story_model_names:  # one real ComfyUI server for all of them (story_server.py, beside this script)
        from story_server import render_thumbnails as render_on_server

        written += render_on_server(story_model_names, out_dir=out_dir)
    return written


def core_loader_card(name: str, nodes: list[Node], out_dir: str) -> str:
    """The thumbnail of a core-loader template: its graph as a card (the models are the user's own)."""
    from PIL import Image, ImageDraw

    from lay2story_core.comic import load_font

    image = Image.new("RGB", (512, 320), (32, 34, 40))
    draw = ImageDraw.Draw(image)
    font, small = load_font(22), load_font(15)
    draw.text((20, 16), "ComfyUI core loaders + Lay2Story", font=font, fill=(235, 235, 235))
    y = 60
    for node in nodes:
        draw.rounded_rectangle((20, y, 492, y + 26), radius=6, fill=(58, 62, 74))
        label = node.type + ("  " + str(next(iter(node.widgets.values()))) if node.widgets else "")
        draw.text((30, y + 5), label[:60], font=small, fill=(220, 220, 220))
        y += 32
    draw.text((20, 296), "(diagram of the graph, not a run: uses your own models)", font=small, fill=(160, 160, 160))
    path = os.path.join(out_dir, f"{name}.jpg")
    image.save(f"{path}.tmp.jpg", quality=90)
    os.replace(f"{path}.tmp.jpg", path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=OUT_DIR, help="output folder (default: example_workflows/)")
    parser.add_argument("--no-thumbnails", action="store_true",
                        help="write the JSON files only (thumbnails: tests/nodes/render_thumbnails.py)")
    args = parser.parse_args()
    for path in write(args.out, not args.no_thumbnails):
        print(os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
