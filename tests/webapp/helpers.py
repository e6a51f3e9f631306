"""What several browser tests need from the server side: its answer, and catalogs cut from the real build."""
import json
import shutil

import requests

MODEL = "SmolLM2-135M-Instruct"


def server_answer(base_url: str, messages: list[dict], max_tokens: int) -> dict:
    body = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
    return requests.post(base_url + "v1/chat/completions", json=body, timeout=600).json()


def models_subset(default_built, folder, variant: str, corrupt: str | None = None):
    """A models/ folder holding one variant of the real build, optionally with one file's bytes flipped."""
    catalog = json.loads((default_built / "manifest.json").read_text())
    catalog["models"] = [m for m in catalog["models"] if m["id"] == variant]
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(catalog))
    shutil.copytree(default_built / variant, folder / variant)
    if corrupt:
        shard = folder / variant / corrupt
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, different bytes: only the sha256 can tell
        shard.write_bytes(bytes(data))
    return folder
