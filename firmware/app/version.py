"""The application's version: input registers 0-1 (major, minor*256+patch) and the slot manifest."""

from micropython import const

MAJOR = const(1)
MINOR = const(0)
PATCH = const(0)
