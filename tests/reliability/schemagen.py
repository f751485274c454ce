"""Hypothesis strategies read from an action's ``validate-input.json``.

The cases are generated from the schema itself, so a field added to an
action is attacked without anyone editing the suite: valid inputs (each
property from its type, enum, pattern, format and bounds) and mutations of
them (one property of a wrong type, any text where a pattern is expected,
out-of-range numbers, too-long strings, a required field missing, an extra
field, an input that is not an object).

Whether a generated input passes the schema is decided by the local node's
own validator (``localnode.validation``, gojsonschema's rules): the test then
knows which answer to expect -- the agent's validation-failed list naming
the field, or the module's own answer -- without re-implementing either.

Only the keywords the module's schemas use are read; an unknown one makes
``check_supported`` fail, so a schema change cannot silently weaken the suite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from localnode import validation

SUPPORTED = {"$schema", "title", "description", "examples", "type", "required", "properties",
             "additionalProperties", "pattern", "minLength", "maxLength", "enum", "format", "minimum",
             "maximum", "$id"}
# any code point a JSON string can carry through Go's encoding/json unchanged
ANY_CHAR = st.characters(exclude_categories=("Cs",))
HOSTNAME_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?"
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(ANY_CHAR, max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(ANY_CHAR, max_size=8), inner, max_size=3)),
    max_leaves=6)


def load_schema(path: Path) -> dict:
    schema = json.loads(path.read_text())
    check_supported(schema)
    return schema


def check_supported(schema: dict) -> None:
    """Fail loudly on a keyword this generator does not understand."""
    unknown = set(schema) - SUPPORTED
    for prop in schema.get("properties", {}).values():
        unknown |= set(prop) - SUPPORTED
    assert not unknown, f"schemagen does not know {sorted(unknown)}: teach it before trusting its cases"


def refusals(schema: dict, instance: Any) -> list[dict]:
    """The agent's validation errors for `instance` ([] when the steps would run)."""
    return [dict(e) for e in validation.validate(schema, instance)]


def _string(prop: dict) -> st.SearchStrategy:
    lo, hi = prop.get("minLength", 0), prop.get("maxLength", 64)
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    if prop.get("format") == "uuid":
        return st.uuids().map(str)
    if prop.get("format") == "hostname":
        label = st.from_regex(HOSTNAME_LABEL, fullmatch=True)
        return st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda h: lo <= len(h) <= hi)
    if "pattern" in prop:
        return st.from_regex(prop["pattern"], fullmatch=True).filter(lambda s: lo <= len(s) <= min(hi, 64))
    return st.text(ANY_CHAR, min_size=lo, max_size=min(hi, 64))


def value_of(prop: dict) -> st.SearchStrategy:
    """A value the property's own rules accept."""
    kind = prop.get("type")
    if kind == "string":
        return _string(prop)
    if kind == "integer":
        return st.integers(min_value=prop.get("minimum"), max_value=prop.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"schemagen: no generator for type {kind!r}")


def valid_inputs(schema: dict, overrides: dict[str, st.SearchStrategy] | None = None) -> st.SearchStrategy:
    """Objects with every required property and some optional ones, each
    from its rules (or from `overrides`: values a test must control, such as
    the host a login check connects to)."""
    overrides = overrides or {}
    props = schema.get("properties", {})
    required = {k: overrides.get(k, value_of(p)) for k, p in props.items() if k in schema.get("required", [])}
    optional = {k: overrides.get(k, value_of(p)) for k, p in props.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


def _wrong_type(prop: dict) -> st.SearchStrategy:
    kind = prop.get("type")
    python = {"string": str, "integer": int, "boolean": bool}[kind]

    def other(v: object) -> bool:
        if kind == "integer":
            return isinstance(v, bool) or not isinstance(v, int)
        return not isinstance(v, python) or (kind != "boolean" and isinstance(v, bool))
    return JSON_VALUES.filter(other)


def _breaking_value(prop: dict) -> st.SearchStrategy:
    """A value of the right type that the property's rules should refuse (or
    may accept: the validator decides, and the test expects accordingly)."""
    kind = prop.get("type")
    if kind == "integer":
        lo, hi = prop.get("minimum", -(2**31)), prop.get("maximum", 2**31)
        return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1))
    if kind == "string":
        hi = prop.get("maxLength", 4096)
        return st.one_of(st.text(ANY_CHAR, max_size=80), st.text(ANY_CHAR, min_size=hi + 1, max_size=hi + 40))
    return _wrong_type(prop)


@st.composite
def mutated_inputs(draw: st.DrawFn, schema: dict, overrides: dict[str, st.SearchStrategy] | None = None
                   ) -> tuple[str, object]:
    """(what was broken, the input): one mutation of a valid input."""
    base = draw(valid_inputs(schema, overrides))
    props = schema.get("properties", {})
    how = draw(st.sampled_from(["wrong-type", "breaking-value", "missing", "extra", "not-object"]))
    if how == "not-object":
        return how, draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    if how == "missing" and schema.get("required"):
        field = draw(st.sampled_from(schema["required"]))
        base.pop(field, None)
        return f"missing:{field}", base
    if how == "extra":
        name = draw(st.text(ANY_CHAR, min_size=1, max_size=12).filter(lambda k: k not in props))
        base[name] = draw(JSON_VALUES)
        return f"extra:{name!r}", base
    field = draw(st.sampled_from(sorted(props)))
    base[field] = draw(_wrong_type(props[field]) if how == "wrong-type" else _breaking_value(props[field]))
    return f"{how}:{field}", base


def any_inputs(schema: dict, overrides: dict[str, st.SearchStrategy] | None = None) -> st.SearchStrategy:
    """Half valid inputs, half mutations, each labelled."""
    return st.one_of(valid_inputs(schema, overrides).map(lambda v: ("valid", v)), mutated_inputs(schema, overrides))
