"""Small helpers shared by the CLI command modules."""

from __future__ import annotations

import json
import math
from typing import Any

import typer


def _clean(obj: Any) -> Any:
    """Make ``obj`` strict-JSON friendly: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    typer.echo(json.dumps(_clean(obj), indent=2, default=str))
