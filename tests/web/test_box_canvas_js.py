"""Runs the `node --test` unit tests of web/js/box_canvas.js's pure functions (hit-testing, clamping, parsing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_box_canvas_pure_functions_under_node():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (bash .ci/install_browser.sh installs it)")
    proc = subprocess.run([node, "--test", str(HERE / "box_canvas.test.mjs")], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"node --test failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "# fail 0" in proc.stdout and "# pass 0" not in proc.stdout


def test_modules_parse_as_es_modules():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (bash .ci/install_browser.sh installs it)")
    for path in sorted((REPO / "web" / "js").glob("*.js")):
        proc = subprocess.run([node, "--check", "--input-type=module"], input=path.read_text(), capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"{path.name} does not parse: {proc.stderr[-2000:]}"
