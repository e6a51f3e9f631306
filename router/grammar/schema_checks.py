"""The schema checks of structured output: what a `response_format` may ask, checked before anything compiles.

Pure functions of the request, and twinned by the page's webapp/client/lib/engine/grammar.js, which gets
UNSUPPORTED_KEYWORDS and SCHEMA_LIMITS in its config and refuses the same schemas in the same words.
"""
from __future__ import annotations

import json

import jsonschema

from router.validation import describe, path_of

# Keywords xgrammar 0.2.8 compiles without enforcing (measured: the grammar still admits what they
# forbid). A schema using them is refused, because output could then break the schema. multipleOf:
# web-xgrammar 0.1.27 (the page's) never enforces it, and xgrammar 0.2.8 not on a number, nor beside a
# range (minimum, maximum...), nor without "type": "integer"; one rule for both paths is to refuse it.
UNSUPPORTED_KEYWORDS = ("uniqueItems", "contains", "minContains", "maxContains", "if", "then", "else",
                        "dependentRequired", "dependentSchemas", "not", "multipleOf")
# In a subschema holding one of these, both xgrammars follow only the first present ($ref before anyOf...)
# and ignore every other keyword that constrains the value (measured: {"type": "integer", "anyOf":
# [{"type": "string"}]} admits strings); annotations (title, description, default, $defs...) may stay.
COMBINATORS = ("$ref", "anyOf", "oneOf", "allOf")
ASSERTIONS = ("type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
              "maxLength", "minLength", "pattern", "format", "maxItems", "minItems", "uniqueItems", "maxContains",
              "minContains", "maxProperties", "minProperties", "required", "dependentRequired", "properties",
              "patternProperties", "additionalProperties", "propertyNames", "items", "prefixItems", "contains",
              "unevaluatedItems", "unevaluatedProperties", "dependentSchemas", "not", "if", "then", "else",
              *COMBINATORS)
JSON_OBJECT_SCHEMA = {"type": "object"}  # OpenAI's json_object: any JSON object
# What a schema may hold. Compiling costs grow with the square of a literal's length (two 9,000-character
# enum strings took 21 s), so literals are bounded one by one and in all; the page checks the same limits.
SCHEMA_LIMITS = {"max_chars": 32_000,         # the schema as JSON text
                 "max_depth": 32,             # objects and lists inside one another
                 "max_literal_chars": 1_000,  # one enum or const string, property name or pattern
                 "max_literals_chars": 15_000}  # all of them together
# The page's schema box starts with this example.
EXAMPLE_SCHEMA = {"type": "object", "properties": {
    "answer": {"type": "string", "maxLength": 200},
    "confidence": {"enum": ["low", "medium", "high"]}}, "required": ["answer", "confidence"]}


class SchemaError(ValueError):
    """A response_format that cannot be enforced; `param` names the offending part."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def parse_response_format(value) -> dict | None:
    """OpenAI's shapes, checked: None or {"type": "text"} -> None; json_object -> {"schema", "strict": False};
    json_schema -> {"schema", "strict": True}; both with "openai": the value as given (for an upstream)."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise SchemaError('response_format must be {"type": "text"}, {"type": "json_object"} or '
                          '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
                          "response_format.type")
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return {"schema": JSON_OBJECT_SCHEMA, "strict": False, "openai": value}
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise SchemaError("response_format.json_schema.schema must be a JSON schema object",
                          "response_format.json_schema.schema")
    check_schema(spec["schema"])
    return {"schema": spec["schema"], "strict": True, "openai": value}


def check_schema(schema: dict, base: str = "response_format.json_schema.schema") -> None:
    """Within SCHEMA_LIMITS, valid JSON Schema (2020-12), and nothing in it the grammar would silently
    ignore or could not end; `base` is where the schema is in the request (errors name the field from it)."""
    check_limits(schema, base)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise SchemaError(*describe(error, "JSON schema", base)) from None
    literals = 0
    for path, keyword, value in keywords(schema):
        where = path_of(base, [*path, keyword])
        if keyword in UNSUPPORTED_KEYWORDS and not (keyword == "uniqueItems" and value is False):
            raise SchemaError(f"{where}: the keyword {json.dumps(keyword)} cannot be enforced while generating; "
                              "remove it (and check it after generation if you need it)", where)
        if keyword == "$ref" and resolve(schema, value) is None:
            raise SchemaError(f"{where}: {json.dumps(value)} does not point into this schema (only \"#/...\" references "
                              "are followed)", where)
        if keyword in COMBINATORS:
            check_combinator(schema, path, keyword, value, base)
        if keyword == "$ref" and refers_to_itself(schema, path):
            raise SchemaError(f"{where}: {json.dumps(value)} leads back to itself through references and anyOf/oneOf/"
                              "allOf alone, before any JSON is read, so the grammar cannot be built: remove that loop",
                              where)
        if keyword == "required" and isinstance(parent := resolve_path(schema, path), dict):
            missing = [name for name in value if name not in (parent.get("properties") or {})]
            if missing:
                raise SchemaError(f"{where}: {json.dumps(missing[0])} is required but not in properties, so it could not be "
                                  "generated: add it to properties or drop it from required", where)
        for literal in literal_strings(keyword, value):
            literals += len(literal)
            if len(literal) > SCHEMA_LIMITS["max_literal_chars"] or literals > SCHEMA_LIMITS["max_literals_chars"]:
                raise SchemaError(f"{where}: the schema's strings are too long to compile quickly: at most "
                                  f"{SCHEMA_LIMITS['max_literal_chars']} characters each (enum and const values, "
                                  f"property names, patterns) and {SCHEMA_LIMITS['max_literals_chars']} in all", where)


def check_limits(schema: dict, base: str) -> None:
    """Size and nesting first, without recursion, so that nothing after meets a schema too big to walk."""
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)  # as the page's JSON.stringify writes it
    if len(text) > SCHEMA_LIMITS["max_chars"]:
        raise SchemaError(f"{base} is {len(text)} characters as JSON; the limit is {SCHEMA_LIMITS['max_chars']}",
                          base)
    deepest, stack = 0, [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    if deepest > SCHEMA_LIMITS["max_depth"]:
        raise SchemaError(f"{base} nests objects and lists {deepest} deep; the limit is {SCHEMA_LIMITS['max_depth']}",
                          base)


def check_combinator(root: dict, path, keyword: str, value, base: str) -> None:
    """What xgrammar makes of $ref, anyOf, oneOf and allOf, where it differs from JSON Schema: keywords beside
    them are ignored; allOf is enforced with one schema only; oneOf is anyOf (a value may match several)."""
    node = resolve_path(root, path)
    # named in the lists' order, not the schema's: the same words whatever order a client sends keys in
    followed = next(key for key in COMBINATORS if key in node)
    beside = next((key for key in ASSERTIONS if key in node and key != followed), None)
    if beside is not None:
        where = path_of(base, [*path, beside])
        raise SchemaError(f"{where}: {json.dumps(beside)} beside {json.dumps(followed)} cannot be enforced while "
                          "generating (the grammar follows only one of them); move it inside, or remove it", where)
    where = path_of(base, [*path, keyword])
    if keyword == "allOf" and len(value) > 1:  # xgrammar: "support for allOf with multiple options is ongoing"
        raise SchemaError(f"{where}: \"allOf\" with more than one schema cannot be enforced while generating; "
                          "merge them into one schema", where)
    if keyword == "oneOf" and len(value) > 1 and not exclusive(root, value):
        raise SchemaError(f"{where}: \"oneOf\" cannot be enforced while generating (a value may match several of its "
                          "schemas); use \"anyOf\", or make its schemas plainly exclusive: all const or enum with "
                          "distinct values, or all objects requiring one property with a distinct const", where)


def exclusive(root: dict, branches: list) -> bool:
    """Whether no value can match two of `branches`, in the two forms that are easy to prove (there oneOf
    is anyOf, which the grammar enforces): all literals, no value in two branches; or all of type object,
    each requiring one same property with a const of its own (a tagged union)."""
    literals = [branch_literals(root, branch) for branch in branches]
    if all(values is not None for values in literals):
        return len(set().union(*literals)) == sum(map(len, literals))
    tags = [object_tags(root, branch) for branch in branches]
    shared = set.intersection(*(set(tag) for tag in tags))
    return any(len({tag[name] for tag in tags}) == len(tags) for name in shared)


def branch_literals(root: dict, branch) -> set | None:
    """The values a const or enum branch allows (keyed as scalar_key does), or None when it is no such branch."""
    branch = follow_refs(root, branch)
    if not isinstance(branch, dict) or not ("const" in branch or isinstance(branch.get("enum"), list)):
        return None
    keys = [scalar_key(v) for v in ([branch["const"]] if "const" in branch else branch["enum"])]
    return None if None in keys else set(keys)


def object_tags(root: dict, branch) -> dict:
    """{property: its const} for the required properties of an object branch that each hold one value."""
    branch = follow_refs(root, branch)
    if not isinstance(branch, dict) or branch.get("type") != "object":
        return {}
    properties, tags = branch.get("properties") or {}, {}
    for name in branch.get("required") or []:
        prop = properties.get(name)
        values = ([prop["const"]] if "const" in prop else prop.get("enum")) if isinstance(prop, dict) else None
        if isinstance(values, list) and len(values) == 1 and scalar_key(values[0]) is not None:
            tags[name] = scalar_key(values[0])
    return tags


def scalar_key(value):
    """A key equal for equal JSON scalars (1 and 1.0 alike, true and 1 not), or None for a list or object,
    whose equality is not worth proving."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    return ("number", value) if isinstance(value, (int, float)) else None


def follow_refs(root: dict, node, steps: int = 64):
    """The subschema a chain of $ref ends at (bounded: loops are refused elsewhere, maybe later)."""
    while steps and isinstance(node, dict) and isinstance(node.get("$ref"), str):
        node, steps = resolve(root, node["$ref"]), steps - 1
    return node


def literal_strings(keyword: str, value) -> list[str]:
    """The strings a keyword puts into the grammar verbatim."""
    if keyword in ("enum", "const"):
        return [json.dumps(v) for v in (value if keyword == "enum" and isinstance(value, list) else [value])]
    if keyword == "properties" and isinstance(value, dict):
        return list(value)
    return [value] if keyword == "pattern" and isinstance(value, str) else []


def refers_to_itself(root: dict, path) -> bool:
    """Whether the subschema at `path` comes back to itself through $ref, anyOf, oneOf and allOf alone
    (e.g. {"$ref": "#"}, {"anyOf": [{"$ref": "#"}]}): a grammar rule that calls itself before reading any
    JSON. Alone, xgrammar makes it a grammar no token may start (a 500 once); beside another branch it only
    adds nothing. A walk with a stack, each node once, so no schema, however cyclic, makes it recurse."""
    start = resolve_path(root, path)
    stack, seen = passes_to(root, start), set()
    while stack:
        node = stack.pop()
        if node is start:
            return True
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(passes_to(root, node))
    return False


def passes_to(root: dict, node) -> list[dict]:
    """The subschemas a value of `node` must also be a value of, from its first character: what its $ref
    names and its anyOf, oneOf and allOf branches (not properties or items: those come after a '{' or '[')."""
    if not isinstance(node, dict):
        return []
    targets = [resolve(root, node["$ref"])] if "$ref" in node else []
    for keyword in ("anyOf", "oneOf", "allOf"):
        targets += node[keyword] if isinstance(node.get(keyword), list) else []
    return [target for target in targets if isinstance(target, dict)]


def resolve_path(root: dict, path) -> dict | None:
    return resolve(root, "#/" + "/".join(str(step).replace("~", "~0").replace("/", "~1") for step in path))


def resolve(root: dict, ref) -> dict | None:
    """The subschema a local JSON pointer ("#/$defs/x") names, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for step in filter(None, ref[1:].split("/")):
        step = step.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node


def keywords(node, path=()):
    """(path of the enclosing schema, keyword, value) for every keyword of every subschema."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield path, key, child
            if key in ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas"):
                for name, sub in (child.items() if isinstance(child, dict) else []):
                    yield from keywords(sub, (*path, key, name))
            elif key in ("items", "additionalProperties", "not", "if", "then", "else", "contains",
                         "propertyNames", "unevaluatedProperties", "unevaluatedItems"):
                yield from keywords(child, (*path, key))
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(child, list):
                for i, sub in enumerate(child):
                    yield from keywords(sub, (*path, key, i))
