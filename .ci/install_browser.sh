#!/usr/bin/env bash
# Installs what the real-browser test of the layout editor (tests/web/) needs, on a fresh Debian machine as root:
# Debian's chromium and nodejs/npm, npm playwright-core in tests/web/.node (never `playwright install`: no browser
# downloads), the ComfyUI frontend wheel (comfyui-frontend-package) into the active Python environment (the newest
# checked: L2S_FRONTEND_VERSION), and older frontends into tests/web/.frontends/<version>/ (L2S_EXTRA_FRONTENDS,
# space-separated; default 1.27.10, the version the shared ComfyUI 0.3.64 pins; empty = none). The browser tests run
# against every frontend found there (tests/web/conftest.py). Idempotent and quiet: each part is skipped when already
# there. Versions can be overridden by the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_CORE_VERSION="${L2S_PLAYWRIGHT_CORE_VERSION:-1.65.1}"
FRONTEND_VERSION="${L2S_FRONTEND_VERSION:-1.58.1}"
EXTRA_FRONTENDS="${L2S_EXTRA_FRONTENDS-1.27.10}"
FRONTENDS_DIR="tests/web/.frontends"
NODE_DIR="tests/web/.node"
PYTHON="${PYTHON:-python}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "install_browser.sh: need root to run: $*" >&2; return 1; fi
}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

installed_pw="$(node -p "try { require('./$NODE_DIR/node_modules/playwright-core/package.json').version } catch (e) { '' }")"
if [ "$installed_pw" != "$PLAYWRIGHT_CORE_VERSION" ]; then
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --no-save --silent --loglevel=error \
        "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null 2>&1 \
        || { echo "install_browser.sh: npm install playwright-core@$PLAYWRIGHT_CORE_VERSION failed" >&2; exit 1; }
fi

installed_fe="$("$PYTHON" -c "from importlib.metadata import version; print(version('comfyui-frontend-package'))" \
    2>/dev/null || true)"
if [ "$installed_fe" != "$FRONTEND_VERSION" ]; then
    "$PYTHON" -m pip install -q --disable-pip-version-check -c .ci/constraints.txt \
        "comfyui-frontend-package==$FRONTEND_VERSION" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$PYTHON" -c "import comfyui_frontend_package" \
        || { echo "install_browser.sh: comfyui-frontend-package did not install" >&2; exit 1; }
fi

for version in $EXTRA_FRONTENDS; do
    target="$FRONTENDS_DIR/$version"
    if [ ! -f "$target/comfyui_frontend_package/static/index.html" ]; then
        rm -rf "$target"
        "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$target" \
            "comfyui-frontend-package==$version" 2>&1 | grep -v "^WARNING: Location" >&2 || true
        [ -f "$target/comfyui_frontend_package/static/index.html" ] \
            || { echo "install_browser.sh: comfyui-frontend-package==$version did not install into $target" >&2; exit 1; }
    fi
done
