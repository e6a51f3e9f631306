"""The build's catalog, models/manifest.json, read into plain dicts. The server learns models only here.

The catalog follows the file: when `make build-model` rewrites it while the server runs, the next
request sees the new versions (the manifest is replaced atomically, so a read never sees half a file).
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import jsonschema

from router.tools import tool_format

# The build's contract for the catalog, checked again here: a broken manifest.json is refused whole
# (with the reason), never half-read into a crash in the middle of a request.
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "models" / "manifest.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
log = logging.getLogger("seam.catalog")


class Catalog:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._path = self.folder / "manifest.json"
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._models: tuple[dict, ...] = ()
        self._problem: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the catalog on disk cannot be served (None when it can, or when there is none yet), in words a
        client may read: the server's paths stay in its log."""
        self.models  # noqa: B018 -- re-reads the file if it changed
        return self._problem

    @classmethod
    def load(cls, folder: Path) -> "Catalog":
        return cls(folder)

    @property
    def models(self) -> tuple[dict, ...]:
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._models, self._problem = self._read() if stamp else ((), None)
                self._stamp = stamp
                if self._problem:
                    log.error("the model catalog %s cannot be served: %s", self._path, self._problem)
            return self._models

    def _read(self) -> tuple[tuple[dict, ...], str | None]:
        try:
            catalog = json.loads(self._path.read_text())
        except (OSError, ValueError) as error:
            detail = error.strerror if isinstance(error, OSError) else error  # an OSError's names the path
            return (), f"manifest.json is not readable JSON ({detail}); rebuild it with `make build-model`"
        error = jsonschema.exceptions.best_match(VALIDATOR.iter_errors(catalog))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the top level"
            return (), (f"manifest.json does not follow models/manifest.schema.json at {where}: {error.message}; "
                        "rebuild it with `make build-model`")
        return tuple({**m, "tool_format": self._tool_format(m)} for m in catalog["models"]), None

    def _tool_format(self, entry: dict) -> str:
        """How the variant calls tools, from its chat template (router/tools.py); a variant whose config cannot
        be read is refused where it is loaded, with the reason."""
        try:
            config = json.loads((self.folder / entry["path"] / entry["files"]["config"]).read_text())
            return tool_format(config.get("chat_template", ""))
        except (OSError, ValueError):
            return "generic"

    def variants(self, model: str | None = None) -> list[dict]:
        """Variants of a model name (all variants of the first model when none is named)."""
        models = self.models
        if not models:
            return []
        name = model or models[0]["model"]
        return [m for m in models if m["model"] == name or m["id"] == name]

    def model_names(self) -> list[str]:
        return sorted({m["model"] for m in self.models})

    def by_id(self, model_id: str) -> dict | None:
        return next((m for m in self.models if m["id"] == model_id), None)

    def version_label(self, model_id: str, version: str) -> str | None:
        """A client's (id, version) as the server records it: None for an id not in the catalog, the version
        when the catalog knows it (current or compatible), else "other". No other client string is kept."""
        entry = self.by_id(model_id)
        if entry is None:
            return None
        return version if version in (entry["version"], *entry.get("compatible_versions", [])) else "other"

    def cloud_variant(self, model: str | None) -> dict | None:
        """The variant the CPU engine serves for a model name or id: float32 activations run best on CPUs."""
        variants = self.variants(model)
        preferred = [v for v in variants if v["quantization"] == "q4f32_1"] or variants
        return preferred[0] if preferred else None
