"""CIM Edge: edge-gateway software for urban infrastructure.

The repository keeps the design card's folders (edge/, drivers/, cloud_sync/, provisioning/,
tools/); they install as sub-packages of this one name (pyproject.toml's package-dir), so
nothing lands in site-packages as a bare ``edge`` or ``tools``.
"""

__version__ = "0.2.0"
