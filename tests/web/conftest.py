"""A tiny stand-in for the ComfyUI server, enough to boot the real ComfyUI frontend (the `comfyui-frontend-package`
wheel's static/ folder) with this pack's nodes and web extension, for the real-browser test of the layout editor.

It answers what the frontend needs to start (extensions, object_info generated from the pack's NODE_CLASS_MAPPINGS,
settings, the queue), serves the pack's WEB_DIRECTORY under /extensions/<pack>/ like ComfyUI does, serves /api/view
from a temp folder (node UI images), and records every POST /api/prompt body. Everything else is a 404.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import mimetypes
import os
import shutil
import sys
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "comfyui-lay2story"
SYSTEM_STATS = {
    "system": {"os": "posix", "python_version": sys.version.split()[0], "embedded_python": False,
               "comfyui_version": "0.3.64", "pytorch_version": "", "argv": ["main.py", "--cpu"], "ram_total": 0,
               "ram_free": 0},
    "devices": [],
}
STATIC_API = {  # GET routes with fixed answers
    "/system_stats": SYSTEM_STATS,
    "/users": {"storage": "server", "migrated": True},
    "/features": {},
    "/i18n": {},
    "/prompt": {"exec_info": {"queue_remaining": 0}},
    "/queue": {"queue_running": [], "queue_pending": []},
    "/history": {},
}
SETTINGS = {
    "Comfy.TutorialCompleted": True,  # else a template browser covers the canvas
    "Comfy.Validation.Workflows": False,
    "Comfy.DOMClippingEnabled": False,
}


def load_pack(module_name: str = "l2s_pack_under_test"):
    """Imports the pack through its ComfyUI entry point (the root __init__.py), as ComfyUI's loader does."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def node_info(node_id: str, cls: type, display_name: str) -> dict:
    """One /object_info entry, as ComfyUI's server.py builds it for a classic (V1) node class."""
    inputs = cls.INPUT_TYPES()
    outputs = list(cls.RETURN_TYPES)
    return {
        "input": inputs,
        "input_order": {section: list(spec) for section, spec in inputs.items()},
        "output": outputs,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "name": node_id,
        "display_name": display_name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": f"custom_nodes.{PACK_NAME}",
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "output_tooltips": list(getattr(cls, "OUTPUT_TOOLTIPS", [])),
    }


# ComfyUI core nodes the shipped workflows use, as ComfyUI's /object_info describes them.
CORE_NODE_INFO = {
    name: {"input": {"required": {"images": ["IMAGE", {"tooltip": "The images."}], **extra}},
           "input_order": {"required": ["images", *extra]}, "output": [], "output_is_list": [], "output_name": [],
           "name": name, "display_name": display, "description": "", "python_module": "nodes",
           "category": "image", "output_node": True, "output_tooltips": []}
    for name, display, extra in (
        ("SaveImage", "Save Image", {"filename_prefix": ["STRING", {"default": "ComfyUI"}]}),
        ("PreviewImage", "Preview Image", {}),
    )
}


def object_info(pack) -> dict:
    info = dict(CORE_NODE_INFO)
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        try:
            info[node_id] = node_info(node_id, cls, pack.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id))
        except Exception:  # ComfyUI logs and skips a node whose INPUT_TYPES fails; so do we
            logger.exception("object_info: skipping %s", node_id)
    return info


class FrontendServer:
    """Serves the frontend and the pack on 127.0.0.1 (a free port) from a daemon thread."""

    def __init__(self, static_dir: Path, pack, view_dir: Path, settings: dict | None = None) -> None:
        self.static_dir = Path(static_dir)
        self.settings = dict(SETTINGS if settings is None else settings)
        self.web_dir = (REPO / pack.WEB_DIRECTORY).resolve()
        self.view_dir = Path(view_dir)
        self.object_info = json.dumps(object_info(pack)).encode()
        self.extensions = [f"/extensions/{PACK_NAME}/{p.relative_to(self.web_dir).as_posix()}"
                           for p in sorted(self.web_dir.rglob("*.js"))]
        self.prompts: list[dict] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="frontend-server", daemon=True)

    def __enter__(self) -> FrontendServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _handler_class(self):
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, fmt, *args):  # keep pytest output clean; keep a record for failures
                with server.lock:
                    server.requests.append(fmt % args)

            def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, data: object, status: int = 200) -> None:
                self._send(json.dumps(data).encode(), "application/json", status)

            def _file(self, root: Path, relative: str) -> None:
                path = (root / relative).resolve()
                if not path.is_relative_to(root.resolve()) or not path.is_file():
                    return self._send(b"not found", "text/plain", HTTPStatus.NOT_FOUND)
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if path.suffix in (".js", ".mjs"):
                    kind = "text/javascript"
                self._send(path.read_bytes(), kind)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                url = urlsplit(self.path)
                path = unquote(url.path)
                if path.startswith("/api/"):
                    path = path[4:]
                if path == "/extensions":
                    return self._json(server.extensions)
                if path.startswith(f"/extensions/{PACK_NAME}/"):
                    return self._file(server.web_dir, path[len(f"/extensions/{PACK_NAME}/"):])
                if path == "/object_info":
                    return self._send(server.object_info, "application/json")
                if path == "/settings":
                    return self._json(server.settings)
                if path.startswith("/settings/"):
                    return self._json(server.settings.get(path[len("/settings/"):]))
                if path in STATIC_API:
                    return self._json(STATIC_API[path])
                if path == "/view":
                    query = parse_qs(url.query)
                    relative = Path(query.get("subfolder", [""])[0]) / query.get("filename", [""])[0]
                    return self._file(server.view_dir, relative.as_posix())
                if path in ("", "/"):
                    return self._file(server.static_dir, "index.html")
                if unquote(url.path).startswith("/api/"):
                    return self._json({"error": f"not found: {url.path}"}, HTTPStatus.NOT_FOUND)
                return self._file(server.static_dir, path.lstrip("/"))

            def do_POST(self):  # noqa: N802
                path = urlsplit(self.path).path
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if path in ("/api/prompt", "/prompt"):
                    with server.lock:
                        server.prompts.append(json.loads(body or b"{}"))
                    return self._json({"prompt_id": f"test-{len(server.prompts)}", "number": len(server.prompts),
                                       "node_errors": {}})
                if path.startswith(("/api/settings", "/settings")):
                    return self._json({})
                self._json({"error": f"not found: {path}"}, HTTPStatus.NOT_FOUND)

        return Handler


def browser_requirements() -> tuple[Path, str, Path]:
    """(frontend static dir, chromium path, playwright-core dir), or pytest.skip naming what is missing."""
    missing = []
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing.append("chromium (Debian package)")
    if shutil.which("node") is None:
        missing.append("node")
    playwright = REPO / "tests" / "web" / ".node" / "node_modules" / "playwright-core"
    if not (playwright / "package.json").is_file():
        missing.append(f"npm playwright-core in {playwright.parent}")
    try:
        import comfyui_frontend_package
    except ImportError:
        static = None
        missing.append("comfyui-frontend-package (PyPI)")
    else:
        static = Path(comfyui_frontend_package.__file__).resolve().parent / "static"
        if not (static / "index.html").is_file():
            missing.append(f"the frontend's static/index.html in {static}")
    if missing:
        pytest.skip(f"real-browser test needs {', '.join(missing)}: run `bash .ci/install_browser.sh` as root")
    return static, chromium, playwright


@pytest.fixture
def browser_tools() -> tuple[Path, str, Path]:
    return browser_requirements()


@pytest.fixture
def frontend_server(browser_tools, tmp_path):
    """The stub server; L2S_VUE_NODES=1 in the environment switches the frontend to its Vue node renderer."""
    static = browser_tools[0]
    view_dir = tmp_path / "view"
    view_dir.mkdir()
    settings = {**SETTINGS, "Comfy.VueNodes.Enabled": os.environ.get("L2S_VUE_NODES") == "1"}
    with FrontendServer(static, load_pack(), view_dir, settings) as server:
        yield server
