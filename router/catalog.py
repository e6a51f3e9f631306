"""The build's catalog, models/manifest.json, read into plain dicts. The server learns models only here."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Catalog:
    folder: Path
    models: tuple[dict, ...]

    @classmethod
    def load(cls, folder: Path) -> "Catalog":
        path = folder / "manifest.json"
        models = json.loads(path.read_text())["models"] if path.is_file() else []
        return cls(folder=folder, models=tuple(models))

    def variants(self, model: str | None = None) -> list[dict]:
        """Variants of a model name (all variants of the first model when none is named)."""
        if not self.models:
            return []
        name = model or self.models[0]["model"]
        return [m for m in self.models if m["model"] == name or m["id"] == name]

    def model_names(self) -> list[str]:
        return sorted({m["model"] for m in self.models})

    def by_id(self, model_id: str) -> dict | None:
        return next((m for m in self.models if m["id"] == model_id), None)

    def cloud_variant(self, model: str | None) -> dict | None:
        """The variant the CPU engine serves for a model name or id: float32 activations run best on CPUs."""
        variants = self.variants(model)
        preferred = [v for v in variants if v["quantization"] == "q4f32_1"] or variants
        return preferred[0] if preferred else None
