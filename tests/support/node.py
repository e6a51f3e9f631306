"""Runs the page's pure JS modules under node (Debian's, no browser): a Python test hands the same inputs
to the server's Python and to the browser's JS, and compares what they return."""
from __future__ import annotations

import json
import shutil
import subprocess

from tests.support.repo import REPO

ENGINE_JS = REPO / "webapp" / "client" / "lib" / "engine"
JINJA_JS = REPO / "webapp" / "node_modules" / "@huggingface" / "jinja" / "dist" / "index.js"


def run_js(body: str, data, timeout_s: float = 60):
    """`body` is an async function body that sees `data` (the JSON of `data`) and the engine's modules as
    `modules["sampling"]` etc.; what it returns comes back as JSON."""
    node = shutil.which("node")
    assert node, "node is missing: run `make setup` (it installs Debian's nodejs)"
    names = ("sampling", "errors", "grammar", "chat_template", "next_turn", "tools", "cpu_threads")
    imports = "\n".join(f'import * as {n} from "{(ENGINE_JS / f"{n}.js").as_uri()}";' for n in names)
    script = f"""{imports}
import {{ Template }} from "{JINJA_JS.as_uri()}";
const modules = {{ {", ".join(names)} }};
let input = "";
for await (const piece of process.stdin) input += piece;
const data = JSON.parse(input);
const result = await (async () => {{ {body} }})();
process.stdout.write(JSON.stringify(result));
"""
    done = subprocess.run([node, "--input-type=module", "-e", script], input=json.dumps(data), capture_output=True,
                          text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
