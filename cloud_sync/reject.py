"""Reject: why the backend refused a message, as a short reason code plus a detail."""

from __future__ import annotations

# The reason codes travel in acks ("err") and in logs and counters, so they are a closed set.
REASONS: tuple[str, ...] = (
    "too_large",
    "malformed_cbor",
    "too_deep",
    "malformed_cose",
    "unknown_kid",
    "revoked_kid",
    "retired_kid",
    "expired_kid",
    "bad_signature",
    "malformed_payload",
    "bad_version",
    "dev_mismatch",
    "bad_field",
    "relative_time",
    "seq_conflict",
    "inflate_limit",
)


class Reject(Exception):
    """A message the backend refuses; str(e) is "reason: detail"."""

    def __init__(self, reason: str, detail: str, dev: str | None = None,
                 seq: int | None = None) -> None:
        if reason not in REASONS:
            # A typo here would silently create a new counter label; fail at the raise site.
            raise ValueError(f"unknown reject reason {reason!r}")
        self.reason, self.detail, self.dev, self.seq = reason, detail, dev, seq
        super().__init__(f"{reason}: {detail}")

    def __reduce__(self) -> tuple[type[Reject], tuple[str, str, str | None, int | None]]:
        # The default pickling passes self.args to __init__, which takes other arguments.
        return (Reject, (self.reason, self.detail, self.dev, self.seq))
