"""A tiny stand-in for the ComfyUI server, enough to boot the real ComfyUI frontend (the `comfyui-frontend-package`
wheel's static/ folder) with this pack's nodes and web extension, for the real-browser test of the layout editor.

Every browser test runs once per frontend found (the `frontend` fixture): the one installed in the environment (the
newest checked) and each one in tests/web/.frontends/<version>/ (`.ci/install_browser.sh` puts 1.27.10 there, the
version the shared ComfyUI pins). ``L2S_FRONTENDS=1.27.10,1.58.1`` limits the run to those versions.

It answers what the frontend needs to start (extensions, object_info generated from the pack's NODE_CLASS_MAPPINGS,
settings, the queue), serves the pack's WEB_DIRECTORY under /extensions/<pack>/ like ComfyUI does, serves /api/view
from a temp folder (node UI images), and records every POST /api/prompt body. With an ``executor`` (a function of
the prompt body returning ComfyUI's per-node UI outputs, e.g. ``{"7": {"images": [...]}}``) it also runs each
queued prompt and answers GET /api/history[/<id>] as ComfyUI does; a page then shows the outputs by dispatching the
"executed" events the websocket would have sent. Everything else is a 404.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import mimetypes
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
FRONTENDS_DIR = REPO / "tests" / "web" / ".frontends"
FRONTENDS_ENV = "L2S_FRONTENDS"
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

    def __init__(self, static_dir: Path, pack, view_dir: Path, settings: dict | None = None,
                 executor=None) -> None:
        self.static_dir = Path(static_dir)
        self.settings = dict(SETTINGS if settings is None else settings)
        self.web_dir = (REPO / pack.WEB_DIRECTORY).resolve()
        self.view_dir = Path(view_dir)
        self.object_info = json.dumps(object_info(pack)).encode()
        self.extensions = [f"/extensions/{PACK_NAME}/{p.relative_to(self.web_dir).as_posix()}"
                           for p in sorted(self.web_dir.rglob("*.js"))]
        self.prompts: list[dict] = []
        self.executor = executor
        self.history: dict[str, dict] = {}
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

    def run(self, prompt_id: str, body: dict) -> None:
        """Runs a queued prompt with the executor; its outputs (or its error) go to the history."""
        try:
            outputs, status = self.executor(body), {"status_str": "success", "completed": True, "messages": []}
        except Exception as err:  # reported through the history, as ComfyUI reports a failed run
            logger.exception("prompt %s failed", prompt_id)
            outputs, status = {}, {"status_str": "error", "completed": False, "messages": [["error", str(err)]]}
        with self.lock:
            self.history[prompt_id] = {"prompt": [len(self.history), prompt_id, body.get("prompt", {})],
                                       "outputs": outputs, "status": status}

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
                if path == "/history" or path.startswith("/history/"):
                    wanted = path[len("/history/"):]
                    with server.lock:  # copied under the lock, sent outside it (logging the request takes it too)
                        history = {k: v for k, v in server.history.items() if not wanted or k == wanted}
                    return self._json(history)
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
                    data = json.loads(body or b"{}")
                    with server.lock:
                        server.prompts.append(data)
                        prompt_id = f"test-{len(server.prompts)}"
                    if server.executor is not None:  # runs after the answer, as ComfyUI's queue does
                        threading.Thread(target=server.run, args=(prompt_id, data), daemon=True).start()
                    return self._json({"prompt_id": prompt_id, "number": len(server.prompts), "node_errors": {}})
                if path.startswith(("/api/settings", "/settings")):
                    return self._json({})
                self._json({"error": f"not found: {path}"}, HTTPStatus.NOT_FOUND)

        return Handler


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


def find_frontends() -> list[tuple[str, Path]]:
    """(version, static dir) of each frontend found, newest first: the environment's and tests/web/.frontends/*."""
    found: dict[str, Path] = {}
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is not None and spec.origin:
        static = Path(spec.origin).resolve().parent / "static"
        try:
            version = importlib.metadata.version("comfyui-frontend-package")
        except importlib.metadata.PackageNotFoundError:
            version = "installed"
        if (static / "index.html").is_file():
            found[version] = static
    if FRONTENDS_DIR.is_dir():
        for folder in sorted(FRONTENDS_DIR.iterdir()):
            static = folder / "comfyui_frontend_package" / "static"
            if (static / "index.html").is_file():
                found.setdefault(folder.name, static)
    wanted = [v.strip() for v in os.environ.get(FRONTENDS_ENV, "").split(",") if v.strip()]
    if wanted:
        found = {v: p for v, p in found.items() if v in wanted}
    return sorted(found.items(), key=lambda item: _version_key(item[0]), reverse=True)


FRONTENDS = find_frontends()


@pytest.fixture(params=FRONTENDS or [("missing", None)], ids=lambda f: f"frontend-{f[0]}")
def frontend(request) -> tuple[str, Path | None]:
    """(version, static dir) of the frontend this run of a browser test uses."""
    return request.param


def browser_requirements(static: Path | None = None) -> tuple[Path, str, Path]:
    """(frontend static dir, chromium path, playwright-core dir), or pytest.skip naming what is missing. Without
    ``static``, the environment's frontend package."""
    missing = []
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing.append("chromium (Debian package)")
    if shutil.which("node") is None:
        missing.append("node")
    playwright = REPO / "tests" / "web" / ".node" / "node_modules" / "playwright-core"
    if not (playwright / "package.json").is_file():
        missing.append(f"npm playwright-core in {playwright.parent}")
    if static is None:
        try:
            import comfyui_frontend_package
        except ImportError:
            missing.append("comfyui-frontend-package (PyPI)")
        else:
            static = Path(comfyui_frontend_package.__file__).resolve().parent / "static"
    if static is not None and not (static / "index.html").is_file():
        missing.append(f"the frontend's static/index.html in {static}")
    if missing:
        pytest.skip(f"real-browser test needs {', '.join(missing)}: run `bash .ci/install_browser.sh` as root")
    return static, chromium, playwright


@pytest.fixture
def browser_tools(frontend) -> tuple[Path, str, Path]:
    return browser_requirements(frontend[1] if frontend[1] is not None else None)


@pytest.fixture
def prompt_executor():
    """What runs queued prompts: None (they are only recorded). A test module overrides this fixture with a function
    of the server's /view folder returning the server's ``executor``."""
    return None


@pytest.fixture
def frontend_server(browser_tools, tmp_path, prompt_executor):
    """The stub server; L2S_VUE_NODES=1 in the environment switches the frontend to its Vue node renderer."""
    static = browser_tools[0]
    view_dir = tmp_path / "view"
    view_dir.mkdir()
    settings = {**SETTINGS, "Comfy.VueNodes.Enabled": os.environ.get("L2S_VUE_NODES") == "1"}
    executor = None if prompt_executor is None else prompt_executor(view_dir)
    with FrontendServer(static, load_pack(), view_dir, settings, executor=executor) as server:
        yield server


@pytest.fixture
def run_driver(browser_tools, frontend_server, tmp_path):
    """Runs a browser driver (``run_driver("drive_x.mjs", **config)``) against this test's server: its config
    (the server's URL, chromium, playwright-core, the result file, then ``config``) goes to tmp_path/config.json;
    returns what the driver wrote, with ``seconds`` it took. A failed driver fails the test with its stderr, the
    steps it saw, its errors and ``details()``."""
    _, chromium, playwright = browser_tools

    def run(script: str, *, timeout: float = 180, details: Callable[[], str] | None = None, **config) -> dict:
        config = {"url": frontend_server.url, "chromium": chromium, "playwright_dir": str(playwright.parent),
                  "out": str(tmp_path / "result.json"), **config}
        (tmp_path / "config.json").write_text(json.dumps(config))
        start = time.monotonic()
        proc = subprocess.run(["node", str(REPO / "tests" / "web" / script), str(tmp_path / "config.json")],
                              capture_output=True, text=True, timeout=timeout)
        out = Path(config["out"])
        result = json.loads(out.read_text()) if out.is_file() else {}
        assert proc.returncode == 0, (f"driver failed ({time.monotonic() - start:.1f} s):\n{proc.stderr[-4000:]}\n"
                                      f"steps seen: {list(result.get('steps', {}))}\nerrors: {result.get('errors')}"
                                      + ("" if details is None else f"\n{details()}"))
        result["seconds"] = time.monotonic() - start
        return result

    return run
