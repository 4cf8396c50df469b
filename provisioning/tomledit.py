"""Set keys in TOML text line by line, so a template's comments and layout survive.

Only what provisioning needs: ``key = value`` on one line under a ``[table]`` header. The
result is parsed again by the caller (tomllib, then the site loader), so an edit this module
gets wrong is caught before anything is written.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_KEY = re.compile(r'^\s*("?[\w-]+"?)\s*=')


class EditError(ValueError):
    """The text cannot take the edit (the key's value spans lines, say)."""


def literal(value: Any) -> str:
    """A TOML literal for a str, bool, int or float (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def parse_value(text: str) -> Any:
    """``--set`` values: a TOML literal when it is one (3, true, "x"), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _table(line: str) -> list[str] | None:
    m = _HEADER.match(line)
    if not m:
        return None
    return [p.strip().strip('"') for p in m.group(1).split(".")]


def set_key(text: str, table: str, key: str, value: Any, *, create: bool = True) -> str:
    """``text`` with ``[table] key = value``; the table is added at the end when missing."""
    want = table.split(".") if table else []
    lines = text.splitlines()
    current: list[str] = []
    header_at: int | None = 0 if not want else None
    last_key_at: int | None = None
    for i, line in enumerate(lines):
        t = _table(line)
        if t is not None or line.lstrip().startswith("[["):
            if header_at is not None and current == want:
                break
            current = t or ["[["]
            if current == want:
                header_at, last_key_at = i, None
            continue
        if current != want:
            continue
        if line.strip() and not line.lstrip().startswith("#"):
            last_key_at = i  # the table's last content line (a multi-line value's last line)
        m = _KEY.match(line)
        if m and m.group(1).strip('"') == key:
            try:
                tomllib.loads(line)
            except tomllib.TOMLDecodeError:
                raise EditError(f"[{table}] {key} spans several lines") from None
            lines[i] = f"{key} = {literal(value)}"
            return "\n".join(lines) + "\n"
    entry = f"{key} = {literal(value)}"
    if header_at is None:
        if not create:
            raise EditError(f"there is no [{table}] table")
        return text.rstrip("\n") + f"\n\n[{table}]\n{entry}\n"
    at = (last_key_at if last_key_at is not None else header_at) + 1
    if not want and last_key_at is None:
        at = 0
    lines.insert(at, entry)
    return "\n".join(lines) + "\n"


def get(text: str, dotted: str) -> Any:
    """The value at ``a.b.c`` of the parsed text, or None."""
    node: Any = tomllib.loads(text)
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
