"""A workflow definition written back as TOML, in the shape docs/workflows.md shows.

The console's text view and ``workflows.get`` show a stored definition (JSON in the store) as
the TOML people write; ``tomllib.loads(to_toml(d)) == d`` for every definition the parser
takes (tests/engine/test_workflow_verbs.py checks it on every starter). Pure: no I/O, so the
console may import it.

Top-level values come first, then ``[params]``, ``[trigger]``, ``[goal]``, ``[offers.NAME]``
and ``[[steps]]``; inside a step, tables (a branch's ``condition``) and lists of tables
(``where``, ``variants``) are written inline, one line each.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_FIRST = ("id", "name", "description", "category", "version", "enabled")
_TABLES_LAST = ("params", "trigger", "goal", "offers")


def to_toml(definition: Mapping[str, Any]) -> str:
    """``definition`` as TOML text (None values are left out: TOML has no null)."""
    order = [k for k in _FIRST if k in definition]
    order += [k for k in definition if k not in order and k not in (*_TABLES_LAST, "steps")]
    lines = [f"{_key(k)} = {_value(definition[k])}" for k in order if definition[k] is not None]
    for key in _TABLES_LAST:
        table = definition.get(key)
        if isinstance(table, Mapping):
            lines += _table(table, _key(key))
    steps = definition.get("steps")
    if isinstance(steps, list):
        for step in steps:
            lines += ["", "[[steps]]"]
            if isinstance(step, Mapping):
                lines += [f"{_key(k)} = {_value(v)}" for k, v in step.items() if v is not None]
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(table: Mapping[str, Any], name: str) -> list[str]:
    """``[name]`` with its values, then its sub-tables as ``[name.key]``."""
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping) and v is not None]
    subs = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    out: list[str] = []
    if scalars or not subs:
        out += ["", f"[{name}]", *(f"{_key(k)} = {_value(v)}" for k, v in scalars)]
    for key, sub in subs:
        out += _table(sub, f"{name}.{_key(key)}")
    return out


def _key(key: str) -> str:
    return key if _BARE.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{value!r} cannot be written as TOML")
        return repr(value)
    if isinstance(value, str):
        # JSON escapes what TOML's basic strings forbid, except DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    raise ValueError(f"{type(value).__name__} cannot be written as TOML")
