"""ComfyUI entry point of the Lay2Story pack.

ComfyUI imports this folder as ``custom_nodes/<any-folder-name>``; the node classes live in :mod:`.nodes`, the
ComfyUI-free engine in ``lay2story_core`` (importable on its own from this folder).
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    # Lets ``import lay2story_core`` resolve to this pack's copy (one copy of each module, whatever the folder name).
    sys.path.append(_PACK_DIR)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
