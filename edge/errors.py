"""Errors a technician can act on: each builds one clear sentence from its context."""

from __future__ import annotations


class CimEdgeError(Exception):
    """Base of every error the CLI prints as one line instead of a traceback."""


class ConfigError(CimEdgeError):
    """A config file is malformed: names the file, the key path, the reason and the line."""

    def __init__(self, file: str, key: str, reason: str, line: int | None = None) -> None:
        self.file, self.key, self.reason, self.line = file, key, reason, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {reason}" if key else f"{where}: {reason}")


class DriverError(CimEdgeError):
    """A field device did not answer as expected."""


class Timeout(DriverError):
    """The device did not answer in time."""


class BadFrame(DriverError):
    """A frame failed its CRC, length or format check."""


class DeviceException(DriverError):
    """The device answered with a protocol exception code."""

    def __init__(self, code: int, what: str = "") -> None:
        self.code = code
        super().__init__(f"device exception {code}{': ' + what if what else ''}")


class SyncError(CimEdgeError):
    """The uplink to the broker failed."""


class StoreError(CimEdgeError):
    """The SQLite buffer could not be opened or written."""
