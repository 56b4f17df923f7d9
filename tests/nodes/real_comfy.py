"""Boot the real ComfyUI in this process (for the check scripts the real-host tests run as subprocesses).

    from real_comfy import boot
    pack = boot(comfy_dir)   # ComfyUI's ``comfy`` importable on the CPU; the pack imported as ``lay2story_pack``

The pack is imported under its own package name (as ComfyUI's loader does, with a folder name), so ComfyUI's
top-level ``nodes`` module and the pack's ``nodes`` package never clash; ``lay2story_core`` resolves to this checkout.
A check script prints one JSON line (``emit``) that its pytest module reads (``conftest.run_real_check``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def boot(comfy_dir: str):
    """Real ComfyUI on the CPU + the pack as ``lay2story_pack``; returns the pack module."""
    sys.path[:0] = [comfy_dir, os.path.join(ROOT, "tests")]
    sys.path.append(ROOT)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (device chosen now, on the CPU)

    if "lay2story_pack" in sys.modules:
        return sys.modules["lay2story_pack"]
    spec = importlib.util.spec_from_file_location("lay2story_pack", os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lay2story_pack"] = module
    spec.loader.exec_module(module)
    return module


def emit(figures: dict) -> None:
    """The script's result: one JSON line on stdout (the last line is what the test reads)."""
    sys.stdout.flush()
    print(json.dumps(figures), flush=True)
