"""A JSON Schema check of the subset ffi/schemas uses (type, enum,
required, properties, additionalProperties, items, oneOf): enough to hold
every result and event to its documented shape without a dependency."""

TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is(value, name):
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def errors(value, schema, at="$"):
    """Every way `value` breaks `schema`, as "path: why" strings."""
    out = []
    if "oneOf" in schema:
        fits = [s for s in schema["oneOf"] if not errors(value, s, at)]
        if len(fits) != 1:
            out.append(f"{at}: matches {len(fits)} of the oneOf shapes, not 1: {value!r}")
        return out
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is(value, k) for k in kinds):
            return [f"{at}: {value!r} is not {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{at}: missing {key}")
        props = schema.get("properties", {})
        for key, v in value.items():
            if key in props:
                out += errors(v, props[key], f"{at}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(v, schema["additionalProperties"], f"{at}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += errors(v, schema["items"], f"{at}[{i}]")
    return out
