"""The registry document (``acl export`` / ``acl import``) as TOML or JSON text. Pure.

The document is what :func:`secserver.acl.registry.export_registry` returns: a ``format``
string and lists of flat tables (members, subsystems, services, endpoints, groups,
group_members, rights, consents). TOML has no null, so keys whose value is None are left
out (import treats a missing key as None).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from typing import Any

from secserver.errors import SecServerError


class DocumentError(SecServerError):
    """A registry document that cannot be read."""

    code = "InvalidDocument"
    http_status = 400


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise DocumentError(f"{where}: cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return json.dumps(key, ensure_ascii=False)


def dump_toml(document: Mapping[str, Any]) -> str:
    """Write a registry document (scalars, then lists of flat tables) as TOML."""
    lines: list[str] = ["# secserver access-rights registry", ""]
    tables: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in document.items():
        if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value, key)}")
    for key, items in tables:
        for index, item in enumerate(items):
            lines.append("")
            lines.append(f"[[{_toml_key(key)}]]")
            for name, value in item.items():
                if value is not None:
                    lines.append(f"{_toml_key(name)} = "
                                 f"{_toml_value(value, f'{key}[{index}].{name}')}")
    return "\n".join(lines) + "\n"


def dump_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def load_document(text: str, fmt: str | None = None) -> dict[str, Any]:
    """Parse a registry document; ``fmt`` is ``toml``, ``json`` or None (guess)."""
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "toml"
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "toml":
            data = tomllib.loads(text)
        else:
            raise DocumentError(f"unknown document format {fmt!r}; use toml or json")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DocumentError(f"not valid {fmt.upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise DocumentError("a registry document must be a table/object at the top level")
    return data
