"""Entry point after boot.py: the loader (``fwboot``) runs the application."""

import fwboot

fwboot.start()
