"""The control sections of the site TOML ([site], [rules.*], [report], [actions.*], [commands]).

edge/config.py hands each table here with its converter and its error maker, so errors
name the file, the key path and the line like every other config error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from cimedge.edge.actions import ActionConfig
from cimedge.edge.commands import CommandsConfig
from cimedge.edge.errors import ConfigError
from cimedge.edge.rbe import ReportConfig, points_of
from cimedge.edge.rules import kinds
from cimedge.edge.rules.schedule import Timetable
from cimedge.edge.sun import Location

SECTIONS = {"site", "rules", "report", "actions", "commands"}
WRITABLE_TABLES = {None, "coil", "holding"}  # drivers without tables write any point


class Control(msgspec.Struct):
    """The parsed control sections."""

    rules: dict[str, kinds.Rule]
    where: Location
    report: ReportConfig
    actions: dict[str, ActionConfig]
    commands: CommandsConfig | None


def load(raw: Mapping[str, Any], units: Mapping[str, str], devices: Mapping[str, Any],
         convert: Callable[[Any, Any, str], Any], tables: Callable[[Any, str], dict[str, Any]],
         error: Callable[[str, str], ConfigError]) -> Control:
    """Convert and cross-check the control sections; raise ``error(key, reason)``."""
    where = convert(raw.get("site", {}), Location, "site")
    if (found := where.problem()) is not None:
        raise error(f"site.{found[0]}", found[1])
    rules = {name: convert(table, kinds.Rule, f"rules.{name}")
             for name, table in tables(raw.get("rules", {}), "rules").items()}
    for name, rule in rules.items():
        if (found := kinds.problem(name, rule, rules, units)) is not None:
            raise error(f"rules.{name}.{found[0]}".rstrip("."), found[1])
        if isinstance(rule, kinds.Schedule):
            try:
                Timetable(rule.steps, where)
            except ValueError as e:
                raise error(f"rules.{name}.steps", str(e)) from None
    if (loop := kinds.cycle(rules)) is not None:
        raise error(f"rules.{loop[0]}.of", "rules depend on each other in a loop: "
                    + " -> ".join(loop))
    report = convert(raw.get("report", {}), ReportConfig, "report")
    for key, reason in points_of(report, units):
        raise error(key, reason)
    actions = {name: convert(table, ActionConfig, f"actions.{name}")
               for name, table in tables(raw.get("actions", {}), "actions").items()}
    for name, action in actions.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise error(f"actions.{name}", "action names are 1-64 of A-Z, a-z, 0-9, _ and -")
        if (found := _action_problem(action, rules, units, devices)) is not None:
            raise error(f"actions.{name}.{found[0]}", found[1])
    commands = convert(raw["commands"], CommandsConfig, "commands") if "commands" in raw else None
    return Control(rules, where, report, actions, commands)


def _action_problem(action: ActionConfig, rules: Mapping[str, kinds.Rule],
                    units: Mapping[str, str], devices: Mapping[str, Any]) -> tuple[str, str] | None:
    for i, point in enumerate(action.points):
        if point not in units:
            return f"points.{i}", f"no configured point named {point!r}"
        device, _, name = point.partition(".")
        table = getattr(devices[device].config.points[name], "table", None)
        if table not in WRITABLE_TABLES:
            return f"points.{i}", f"{point} is on the read-only {table} table"
    if action.trips and len(action.trips) != len(action.points):
        return "trips", f"give one trip rule per point ({len(action.points)}), or none"
    if len(set(action.points)) != len(action.points):
        return "points", "a point is named twice"
    for key, ref in action.rule_refs():
        if ref not in rules:
            return key, f"no rule named {ref!r}"
    if action.level_from and not isinstance(rules[action.level_from], kinds.Schedule):
        return "level_from", f"{action.level_from} is not a schedule rule"
    return None
