"""Structured output: OpenAI's `response_format` turned into a token mask applied at every decoding step.

Three parts, in the order a structured answer meets them:
  schema_checks  what a response_format may ask, refused in words before anything compiles (pure; the
                 page's webapp/client/lib/engine/grammar.js is its twin);
  compilers      a pool of child processes compiling a checked schema against the model's vocabulary;
  matcher        one answer's grammar state, masking the logits before each token.
The browser engine does the same with @mlc-ai/web-xgrammar, with the same JSON style (compilers.JSON_STYLE,
sent to the page in its config) so both paths produce the same tokens.
"""
from router.grammar.compilers import COMPILE_TIMEOUT_S, JSON_STYLE, Grammars, SchemaBusy
from router.grammar.matcher import Constraint
from router.grammar.schema_checks import (EXAMPLE_SCHEMA, SCHEMA_LIMITS, UNSUPPORTED_KEYWORDS, SchemaError,
                                          parse_response_format)

__all__ = ["COMPILE_TIMEOUT_S", "EXAMPLE_SCHEMA", "JSON_STYLE", "SCHEMA_LIMITS", "UNSUPPORTED_KEYWORDS", "Constraint",
           "Grammars", "SchemaBusy", "SchemaError", "parse_response_format"]
