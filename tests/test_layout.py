"""The tests' layout: what tests share lives in tests/support, fixtures in conftest.py files.

- No test module, conftest.py or support module imports a test module or a conftest.py: every import of a
  module under tests/ is of tests.support (or one of its modules). A test module that imports another ties
  it to the other's internals: moving or changing one test then breaks others.
- A conftest.py holds fixtures and pytest's hooks only (functions); classes and helpers go to tests/support.

Plain `ast` parsing of the files, no imports: it runs in a second.
"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SOURCES = sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every module the file imports, relative imports resolved; `from P import name` of a
    package P counts as P.name, as name may be one of its modules."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if (REPO / base.replace(".", "/") / "__init__.py").is_file():
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
            else:
                found.append((node.lineno, base))
    return sorted(found)


def wrong_imports(path: Path, source: str | None = None) -> list[str]:
    """What the file imports from tests/ that is not tests/support, each named with what it is."""
    wrong = []
    for line, module in imported(path, source):
        parts = module.split(".")
        if parts[0] != "tests" or len(parts) == 1 or parts[1] == "support":
            continue
        kind = ("a test module" if parts[-1].startswith("test_") else "a conftest" if parts[-1] == "conftest"
                else "a module outside tests/support")
        wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}, {kind}")
    return wrong


def test_tests_import_only_tests_support():
    wrong = [w for path in SOURCES for w in wrong_imports(path)]
    assert not wrong, "move what is shared to tests/support and import it from there:\n" + "\n".join(wrong)


CONFTESTS = sorted(p for p in SOURCES if p.name == "conftest.py")


def is_fixture(node: ast.FunctionDef) -> bool:
    def name(decorator):
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return ast.unparse(target)
    return any(name(d) in ("pytest.fixture", "fixture") for d in node.decorator_list)


def test_conftests_hold_only_fixtures_and_hooks():
    assert CONFTESTS
    wrong = []
    for path in CONFTESTS:
        where = path.relative_to(REPO)
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                wrong.append(f"{where}:{node.lineno} class {node.name}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not (
                    is_fixture(node) or node.name.startswith("pytest_")):
                wrong.append(f"{where}:{node.lineno} function {node.name}, neither a fixture nor a hook")
    assert not wrong, "conftest.py files hold more than fixtures (move it to tests/support):\n" + "\n".join(wrong)


def test_the_check_sees_every_kind_of_import():
    """The check itself, on a test module that imports in each way it must refuse, and in each it must take."""
    source = ("import tests.router.test_api\nfrom tests.router.conftest import app\nfrom tests.webapp import test_hybrid\n"
              "from . import conftest\nfrom .test_routing import x\nfrom ..webapp.test_client import y\n"
              "def f():\n    from tests.router.test_sampling import z\n"
              "import tests.support.models\nfrom tests.support.api import assert_error\nfrom tests import support\n"
              "from .. import support as s\nfrom ..support.models import TINY\nimport json\n")
    wrong = wrong_imports(TESTS / "router" / "test_sample.py", source)
    assert wrong == [
        "tests/router/test_sample.py:1 imports tests.router.test_api, a test module",
        "tests/router/test_sample.py:2 imports tests.router.conftest, a conftest",
        "tests/router/test_sample.py:3 imports tests.webapp.test_hybrid, a test module",
        "tests/router/test_sample.py:4 imports tests.router.conftest, a conftest",
        "tests/router/test_sample.py:5 imports tests.router.test_routing, a test module",
        "tests/router/test_sample.py:6 imports tests.webapp.test_client, a test module",
        "tests/router/test_sample.py:8 imports tests.router.test_sampling, a test module",
    ], wrong
