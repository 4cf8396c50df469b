"""What the technician commands share: subparser shape, where a gateway's files are, progress."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from cimedge.edge.errors import CimEdgeError

RAW = argparse.RawDescriptionHelpFormatter
if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]  # noqa: SLF001
else:  # not subscriptable at run time on 3.11
    Subparsers = argparse._SubParsersAction  # noqa: SLF001
CONFIG_NAME = "site.toml"


def command(sub: Subparsers, name: str, help_: str, example: str,
            description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with a runnable example."""
    return sub.add_parser(name, help=help_, description=description or help_,
                          epilog=f"example: {example}", formatter_class=RAW)


def default_state_dir() -> Path:
    """$CIMEDGE_STATE_DIR, else $XDG_STATE_HOME/cimedge: a user's own dir, so no root is needed."""
    if env := os.environ.get("CIMEDGE_STATE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "cimedge"


def add_where(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    """--state-dir (and --config): which gateway a command looks at."""
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="the gateway's state dir (default $CIMEDGE_STATE_DIR or "
                        "~/.local/state/cimedge)")
    if config:
        p.add_argument("--config", type=Path, metavar="FILE",
                       help="the site config (default: site.toml in the state dir)")


def config_path(args: argparse.Namespace) -> Path:
    if getattr(args, "config", None):
        return Path(args.config)
    return state_dir(args) / CONFIG_NAME


def state_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    if getattr(args, "config", None):
        return Path(args.config).parent
    return default_state_dir()


def buffer_path(args: argparse.Namespace) -> tuple[Path, object | None]:
    """The buffer file and the loaded site (None when there is no config to read)."""
    from cimedge.edge import config as site_config

    cfg = config_path(args)
    if getattr(args, "config", None) or cfg.exists():
        site = site_config.load(cfg)
        return site.path(site.store.path), site
    return state_dir(args) / "buffer.sqlite", None


class Progress:
    """One stderr line redrawn in place, only on a terminal (or CIMEDGE_PROGRESS=1).

    Scripts and logs get no carriage returns; the command's own output says how it went.
    """

    def __init__(self, label: str, total: int | None = None, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.on = self.out.isatty() or os.environ.get("CIMEDGE_PROGRESS") == "1"
        self.label, self.total, self.done = label, total, 0
        self.t0 = time.monotonic()

    def step(self, what: str = "", n: int = 1) -> None:
        self.done += n
        self.show(what)

    def show(self, what: str = "") -> None:
        if not self.on:
            return
        count = f" {self.done}/{self.total}" if self.total else ""
        bar = ""
        if self.total:
            filled = int(20 * self.done / self.total)
            bar = " [" + "#" * filled + "." * (20 - filled) + "]"
        line = f"{self.label}{bar}{count} {time.monotonic() - self.t0:4.1f} s {what}"
        self.out.write("\r" + line[:100].ljust(100))
        self.out.flush()

    def close(self) -> None:
        if self.on:
            self.out.write("\r" + " " * 100 + "\r")
            self.out.flush()


class UsageError(CimEdgeError):
    """A command-line value that cannot be used: names the option and the reason."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
