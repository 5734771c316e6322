"""The package faces' lazy names (PEP 562): a face lists ``name -> defining module`` and its ``__getattr__`` asks
:func:`attribute`, so ``import robustscale`` (or a subpackage) loads nothing heavy until a name is used."""

from importlib import import_module
from typing import Any


def attribute(face: str, lazy: dict[str, str], namespace: dict[str, Any], name: str) -> Any:
    """``name`` of package ``face`` from the module ``lazy`` names, kept in the face's ``namespace`` so that later
    lookups skip ``__getattr__``; AttributeError for a name the face does not have."""
    if name not in lazy:
        raise AttributeError(f"module {face!r} has no attribute {name!r}")
    value = namespace[name] = getattr(import_module(lazy[name]), name)
    return value
