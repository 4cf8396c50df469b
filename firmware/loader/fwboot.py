"""The loader: install a staged signed update, pick the application slot, run it.

Flash holds the loader (``main.py``, this module, ``fwupdate.py``, ``lms.py``, ``hw.py``),
``board.json``, the firmware key ``fwkey.pub`` and two application slots, ``a/`` and ``b/``.
The text file ``slot`` names the slot to run: ``"a"`` (confirmed), or ``"b a 2"`` (b on
trial, a to fall back on, 2 boots tried). A trial slot that fails to start, or is not
confirmed healthy within 3 boots (watchdog resets), is dropped for its fallback. Every
change of state is a new file renamed over the old one, so a power cut never leaves a
half-written state.
"""

import os
import sys

from micropython import const

import hw

_TRIES = const(3)


def read_text(name):
    """The text of flash file ``name``, or None."""
    try:
        with open(hw.path(name)) as f:
            return f.read()
    except OSError:
        return None


def write_atomic(name, data):
    """Replace flash file ``name`` with ``data``: a power cut leaves the old or the new file."""
    new = hw.path(name + ".new")
    with open(new, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    try:
        os.rename(new, hw.path(name))
    except OSError:  # FAT does not rename over a file
        os.remove(hw.path(name))
        os.rename(new, hw.path(name))


def log(msg):
    """Record the outcome of the last update or revert in ``update.log``."""
    write_atomic("update.log", msg + "\n")


def state():
    """(slot, fallback or None, boots tried) from the ``slot`` file; ("a", None, 0) if unreadable."""
    parts = (read_text("slot") or "a").split()
    slot = parts[0] if parts and parts[0] in ("a", "b") else "a"
    fallback = None
    tries = 0
    if len(parts) == 3 and parts[1] in ("a", "b") and parts[1] != slot:
        fallback = parts[1]
        try:
            tries = int(parts[2])
        except ValueError:
            tries = _TRIES
    return slot, fallback, tries


def version(slot):
    """The version tuple in slot ``slot``'s manifest, or None if the slot holds no whole app."""
    import json

    try:
        return tuple(json.loads(read_text(slot + "/manifest.json"))["version"])
    except (TypeError, ValueError, KeyError):
        return None


class Boot:
    """The slot this boot runs, and, on a trial boot, the one to fall back on."""

    def __init__(self, slot, fallback):
        self.slot = slot
        self.fallback = fallback

    @property
    def trial(self):
        """True until ``confirm()``."""
        return self.fallback is not None

    def confirm(self):
        """The application is healthy: keep this slot and raise the anti-rollback floor."""
        if self.fallback is None:
            return
        v = version(self.slot)
        if v is not None:
            write_atomic("fwfloor", "%d.%d.%d" % v)
        write_atomic("slot", self.slot)
        self.fallback = None

    def revert(self, why):
        """Give up the trial slot for its fallback."""
        log("reverted to slot %s: slot %s %s" % (self.fallback, self.slot, why))
        write_atomic("slot", self.fallback)


def _other(slot):
    return "b" if slot == "a" else "a"


def choose():
    """Decide this boot's slot and record the attempt."""
    slot, fallback, tries = state()
    if fallback is not None:
        boot = Boot(slot, fallback)
        if tries >= _TRIES or version(slot) is None:
            boot.revert("was not confirmed in %d boots" % tries)
            return Boot(fallback, None)
        write_atomic("slot", "%s %s %d" % (slot, fallback, tries + 1))
        return boot
    if version(slot) is None:
        other = _other(slot)
        if version(other) is not None:
            write_atomic("slot", other)
            return Boot(other, None)
    return Boot(slot, None)


def start():
    """Boot: wait out the grace window, update if one is staged, run the slot's ``app.main()``.

    The grace window (``board.json`` "grace_ms", default 2000) comes before anything starts
    the watchdog, which cannot be stopped once running: ``cimedge node flash`` resets the
    board and interrupts it (Ctrl-C over USB) inside this window, so copying is never cut
    short by a watchdog reset.
    """
    from time import sleep_ms

    sleep_ms(hw.board().get("grace_ms", 2000))
    try:
        os.stat(hw.path("update.bin"))
    except OSError:
        pass
    else:
        import fwupdate

        fwupdate.apply_staged()
    boot = choose()
    sys.path.insert(0, hw.path(boot.slot))
    try:
        import app
    except Exception as e:  # noqa: BLE001  # any failure to load the app ends the same way
        sys.print_exception(e)
        if boot.trial:
            boot.revert("failed to load")
        elif version(_other(boot.slot)) is not None:
            write_atomic("slot", _other(boot.slot))  # older, but it runs
        hw.reset()
        return
    hw.run(app.main(boot))
