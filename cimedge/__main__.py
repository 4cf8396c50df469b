"""``python -m cimedge``: the technician and operations CLI."""

from cimedge.provisioning.cli import main

raise SystemExit(main())
