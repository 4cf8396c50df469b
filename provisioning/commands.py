"""The technician's commands, registered on the top-level `cimedge` parser in one call.

Each module keeps its own parser and handler (``set_defaults(handler=...)``); drivers, the
broker probe and the registry are imported inside the handlers that need them.
"""

from __future__ import annotations

from cimedge.provisioning import backend, buffer, ca, doctor, points, provision, rotate, tail
from cimedge.provisioning.clikit import Subparsers


def add_parsers(sub: Subparsers) -> None:
    for module in (provision, ca, backend, doctor, tail, points, buffer, rotate):
        module.add_parsers(sub)
