"""Request bodies checked one way: each against its JSON schema in router/schemas/ (Draft 2020-12).

Every POST endpoint calls `check_body` first; what a schema cannot say (a catalog's ids, a configured
limit, a schema's compile) is checked in code after it. One formatter, `describe`, turns the best
JSON-schema error into an OpenAI-style refusal, here and for response_format schemas
(router/grammar/schema_checks.py), so a param has one style everywhere: `messages[0].role`.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jsonschema

from router.errors import ApiError

SCHEMAS = Path(__file__).with_name("schemas")


@functools.cache
def schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """Built once per schema: checking a schema itself is slow (tests/router/test_request_schemas.py does it)."""
    return jsonschema.Draft202012Validator(schema(name))


def check_body(body: dict, name: str) -> None:
    """A 400 naming the field when `body` does not follow router/schemas/`name`."""
    error = jsonschema.exceptions.best_match(validator(name).iter_errors(body))
    if error is not None:
        raise ApiError(400, *describe(error, "request body"))


def describe(error: jsonschema.ValidationError | jsonschema.SchemaError, what: str, base: str = "") -> tuple[str, str | None]:
    """(message, param) for one JSON-schema error. The param names the field itself, also where jsonschema
    reports the object holding it (a required or unexpected property), and the message adds the field's
    description, which says what it should hold in words."""
    named = field_named(error)
    param = path_of(base, [*error.absolute_path, *named]) or None
    field = (error.schema.get("properties") or {}).get(named[0], {}) if named else error.schema
    about = field.get("description") if isinstance(field, dict) else None
    return f"invalid {what} at {param or 'its top level'}: {error.message}" + (f" ({about})" if about else ""), param


def field_named(error) -> list[str]:
    """The property a `required` or `additionalProperties` error is about ([] for any other error)."""
    if error.validator == "required":
        return [name for name in error.validator_value if name not in error.instance][:1]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known, patterns = error.schema.get("properties") or {}, error.schema.get("patternProperties") or {}
        return [key for key in error.instance if key not in known and not any(re.search(p, key) for p in patterns)][:1]
    return []


def path_of(base: str, steps) -> str:
    """OpenAI's param style: fields joined by '.', list items as [i] (messages[0].content)."""
    return (base + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)).removeprefix(".")
