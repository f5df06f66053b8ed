"""Hypothesis strategies generated from a message's JSON schema (``pydantic`` ``json_schema()``), plus hostile edits.

Covers the subset pydantic writes for the protocol's models: ``$ref``/``$defs``, ``const``, ``enum``,
``anyOf``/``oneOf``, integers and numbers with bounds, strings with ``maxLength``/``pattern``,
booleans, null, arrays and objects (``required``, ``additionalProperties``). Sizes are kept small
so each example is cheap; hypothesis still hits every bound the schema declares.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from gradwatch.protocol import dumps

MAX_ITEMS = 6
#: JSON text spliced in place of one value: what a broken or hostile client sends that no schema allows.
HOSTILE = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "9223372036854775808",
    "-1",
    "1.5",
    '"x"',
    '"NaN"',
    "null",
    "[]",
    "{}",
    "true",
    "[[[[[[[[1]]]]]]]]",
    '"' + "y" * 5000 + '"',
    "4611686018427387905",
)
_MARK = "__gradwatch_fuzz_mark__"


def from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(defs[name], defs))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, defs) for s in schema[key]])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        return st.floats(
            min_value=low,
            max_value=high,
            allow_nan=False,
            allow_infinity=False,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
        )
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 20), 20))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", MAX_ITEMS), MAX_ITEMS)))
    if kind == "object":
        return _object(schema, defs)
    return st.none()  # an unconstrained value (``Any``): null is one


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fixed = st.fixed_dictionaries(
        {k: from_schema(v, defs) for k, v in props.items() if k in required},
        optional={k: from_schema(v, defs) for k, v in props.items() if k not in required},
    )
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        more = st.dictionaries(st.text(max_size=8), from_schema(extra, defs), max_size=3)
        return st.tuples(fixed, more).map(lambda t: {**t[1], **t[0]})
    return fixed


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (the value itself included) that a hostile edit may replace."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += leaf_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += leaf_paths(v, (*path, i))
    return out


def spliced(value: Any, path: tuple[Any, ...], literal: str) -> str:
    """``value`` as JSON text with the value at ``path`` replaced by the raw JSON ``literal``."""
    if not path:
        return literal
    copy: Any = _deep_copy(value)
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = _MARK
    return dumps(copy).replace(f'"{_MARK}"', literal, 1)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
