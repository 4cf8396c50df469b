"""Local rules: the rule kinds of the site TOML, compiled, evaluated on every reading and tick."""

from cimedge.edge.rules.engine import AlarmStates, Rules
from cimedge.edge.rules.kinds import (
    AllOf,
    AnyOf,
    Rate,
    Rule,
    Schedule,
    Stale,
    State,
    Step,
    ThresholdHigh,
    ThresholdLow,
)

__all__ = ["AlarmStates", "AllOf", "AnyOf", "Rate", "Rule", "Rules", "Schedule", "Stale",
           "State", "Step", "ThresholdHigh", "ThresholdLow"]
