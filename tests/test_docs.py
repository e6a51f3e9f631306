"""The docs and the code agree on their settings, and the docs' links lead somewhere.

- Every `SEAM_*` environment variable README.md and docs/*.md name is one the code reads, and every one the
  code reads is in docs/options.md: a `SEAM_<NAME>` for a NAME in router/config.py's `defaults()` (which
  `from_env()` reads), or a `SEAM_...` string in the code of router/, modelrun/, build/, bench/, tools/,
  webapp/ (not node_modules) and the tests' shared code (tests/conftest.py, tests/harness.py, tests/support/).
- Every make variable the Makefile takes (`?=`, or a `$(NAME)` it uses but does not set itself) is in
  docs/options.md's "Make variables" table, and every variable that table lists is one the Makefile takes.
- Every relative link in README.md and docs/*.md leads to a file (and a heading, for an `#anchor` into
  Markdown) that exists.

Plain file reads, no model, no browser: it runs in a second.
"""
from __future__ import annotations

import re
from pathlib import Path

from router.config import defaults

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OPTIONS = REPO / "docs" / "options.md"
MAKEFILE = REPO / "Makefile"

CODE_DIRS = ["router", "modelrun", "build", "bench", "tools", "webapp", "tests/support"]
CODE_FILES = ["tests/conftest.py", "Makefile"]  # the tests' shared code, not the tests
CODE_SUFFIXES = {".py", ".js", ".mjs", ".ts", ".sh"}
ENV_NAME = re.compile(r"\bSEAM_[A-Z0-9_]*[A-Z0-9]\b")

# Variables make defines itself, and the Makefile's own (set with := or =): not options a user gives.
MAKE_BUILTINS = {"MAKE", "MAKEFLAGS", "MAKECMDGOALS", "CURDIR", "SHELL", "MAKEFILE_LIST"}

def code_files() -> list[Path]:
    files = [REPO / name for name in CODE_FILES if (REPO / name).is_file()]
    for folder in CODE_DIRS:
        files += [path for path in (REPO / folder).rglob("*")
                  if path.suffix in CODE_SUFFIXES and path.is_file() and "node_modules" not in path.parts]
    return files


def env_read_by_code() -> dict[str, str]:
    """Every SEAM_* variable the code reads, with where it reads it."""
    found = {f"SEAM_{name}": "router/config.py defaults()" for name in defaults()}
    for path in code_files():
        for name in ENV_NAME.findall(path.read_text(errors="replace")):
            found.setdefault(name, str(path.relative_to(REPO)))
    return found


def env_named_in(path: Path) -> set[str]:
    return set(ENV_NAME.findall(path.read_text()))


def makefile_variables() -> set[str]:
    """The variables a user gives make: those set with ?=, and those used but never set in the Makefile."""
    text = MAKEFILE.read_text()
    settable = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\?=", text, re.M))
    internal = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?::{1,3}=|=)", text, re.M)) | MAKE_BUILTINS
    used = set(re.findall(r"\$[({]([A-Z_][A-Z0-9_]*)[)}]", text))
    return settable | (used - internal)


def section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of that level or above."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match, f"docs/options.md has no '## {heading}' section"
    return match.group(1)


def make_variables_documented() -> set[str]:
    """The variables in the first column of docs/options.md's "Make variables" table."""
    names = set()
    for row in re.findall(r"^\|([^|\n]*)\|", section(OPTIONS.read_text(), "Make variables"), re.M):
        names |= set(re.findall(r"`([A-Z_][A-Z0-9_]*)`", row))
    return names


def test_every_environment_variable_the_docs_name_is_read_by_the_code():
    read = env_read_by_code()
    unknown = {f"{name} (in {path.relative_to(REPO)})" for path in DOCS for name in env_named_in(path)
               if name not in read}
    assert not unknown, ("the docs name environment variables the code never reads (router/config.py's defaults() "
                         "or a SEAM_... string in the code); fix the docs or the name:\n  "
                         + "\n  ".join(sorted(unknown)))


def test_every_environment_variable_the_code_reads_is_in_docs_options():
    documented = env_named_in(OPTIONS)
    missing = {f"{name} (read in {where})" for name, where in env_read_by_code().items() if name not in documented}
    assert not missing, ("the code reads environment variables docs/options.md does not name; document each in "
                         "its tables:\n  " + "\n  ".join(sorted(missing)))


def test_the_make_variables_and_docs_options_agree():
    taken, documented = makefile_variables(), make_variables_documented()
    assert taken, "found no make variables in the Makefile: has its shape changed?"
    problems = [f"the Makefile takes {name}, which docs/options.md's 'Make variables' table does not list"
                for name in sorted(taken - documented)]
    problems += [f"docs/options.md's 'Make variables' table lists {name}, which the Makefile does not take"
                 for name in sorted(documented - taken)]
    assert not problems, "\n".join(problems)


LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]\n]+\]:\s*(\S+)", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    slugs, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def broken_links(doc: Path) -> list[str]:
    problems = []
    for match in LINK.finditer(FENCE.sub("", doc.read_text())):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # a URL, mailto: and the like: not a file of this repository
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        where = f"{doc.relative_to(REPO)}: ({target})"
        try:
            relative = linked.relative_to(REPO).as_posix()
        except ValueError:
            problems.append(f"{where} leads outside the repository")
            continue
        if not linked.exists():
            problems.append(f"{where}: {relative} does not exist")
            continue
        if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where}: {relative} has no heading whose anchor is #{anchor}")
    return problems


def test_every_relative_link_in_the_docs_leads_to_a_file():
    problems = [problem for doc in DOCS for problem in broken_links(doc)]
    assert not problems, "links that lead nowhere:\n  " + "\n  ".join(problems)


def test_the_link_check_sees_links():
    """The check above would pass on docs it cannot parse: the README's links to docs/ must be found."""
    readme = FENCE.sub("", (REPO / "README.md").read_text())
    targets = {match.group(1) or match.group(2) for match in LINK.finditer(readme)}
    assert "docs/options.md" in targets, sorted(targets)
