"""CLI command modules, one per area; each defines ``register(app)``. Discovered by :mod:`robustscale.cli`."""
