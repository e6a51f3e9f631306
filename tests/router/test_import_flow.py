"""Data flows one way: build -> artifacts -> server -> page. What both the build and the server need to run a
model lives in modelrun/, so the server never imports the build, and a server with only an upstream does not
load TVM at all."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Each module under `folder` and the top-level packages it imports (anywhere in it)."""
    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


def test_the_server_never_imports_the_build_and_the_runtime_neither_the_build_nor_the_server():
    router = {m: n for m, n in imported_packages(REPO / "router").items() if "modelbuild" in n}
    runtime = {m: n & {"modelbuild", "router"} for m, n in imported_packages(REPO / "modelrun").items()
               if n & {"modelbuild", "router"}}
    assert router == {} and runtime == {}


def test_a_server_with_only_an_upstream_runs_without_tvm(tiny_built, tmp_path):
    """TVM (and the build) made unimportable, a server whose cloud is an upstream starts and serves its
    catalog, its page and its health; the engine, and TVM with it, is loaded only by a server that runs it."""
    _, models = tiny_built
    script = f"""
import json, sys
sys.modules["tvm"] = None        # `import tvm` now raises ImportError
sys.modules["modelbuild"] = None
from router import create_app
app = create_app({{"MODELS_DIR": {str(models)!r}, "FLEET_DB": {str(tmp_path / "fleet.db")!r},
                  "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1", "TESTING": True}})
client = app.test_client()
print(json.dumps({{"catalog": client.get("/api/catalog").status_code, "page": client.get("/").status_code,
                  "health": client.get("/healthz").status_code,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("tvm", "modelbuild", "modelrun")
                                   and sys.modules[m] is not None)}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"catalog": 200, "page": 200, "health": 200, "loaded": []}
