"""The repository's paths the tests use, and the router's decision schema every page and routing test checks."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema

REPO = Path(__file__).resolve().parent.parent.parent
# The router's decision, as every page test and the routing table tests check it.
DECISION = jsonschema.Draft202012Validator(
    json.loads((REPO / "router" / "schemas" / "route-decision.v1.json").read_text()))
TVMJS = REPO / "webapp" / "node_modules" / "@mlc-ai" / "web-runtime" / "lib" / "index.js"
