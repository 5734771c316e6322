"""The WideResNets' names and sizes, arithmetic only (no torch): ``wrn_28_10`` -> (28, 10), which (depth, width) pairs
can be built, their parameter counts without building them, and the sizes the paper studies. The analysis that
chooses a model size for a budget (:mod:`robustscale.analysis.plan`) reads them without waiting for torch."""

from __future__ import annotations

import re

__all__ = ["parse_wrn_name", "check_wrn_size", "wrn_params", "PAPER_SIZES"]

_WRN_NAME = re.compile(r"^wrn_(\d+)_(\d+)$")
# the sizes the paper studies, and small ones for CPU work
PAPER_SIZES = ((10, 1), (10, 2), (16, 1), (16, 2), (16, 4), (16, 8), (22, 2), (28, 2), (28, 4), (28, 10), (34, 10),
               (34, 20), (70, 16))


def wrn_params(depth: int, width: int, num_classes: int = 10, in_chans: int = 3) -> int:
    """Parameter count of :class:`~robustscale.models.wideresnet.WideResNet` ``(depth, width)`` without building it,
    mirroring its constructor.

    Choosing a model size for a compute budget scans hundreds of (depth, width) pairs; building each one (even on
    the meta device) takes a tenth of a second, counting takes microseconds. ``tests/models`` checks this count
    against the built model's parameters.
    """
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]
    total = in_chans * widths[0] * 9  # stem
    for g, stride in enumerate((1, 2, 2)):
        for i in range(n):
            cin, cout = (widths[g] if i == 0 else widths[g + 1]), widths[g + 1]
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9  # bn1, conv1, bn2, conv2
            if (stride if i == 0 else 1) != 1 or cin != cout:
                total += cin * cout  # 1x1 projection
    return total + 2 * widths[3] + widths[3] * num_classes + num_classes  # final BN and the head


def parse_wrn_name(name: str) -> tuple[int, int] | None:
    """``"wrn_28_10"`` -> ``(28, 10)``; ``None`` for names that are not WideResNets."""
    m = _WRN_NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_wrn_size(depth: int, width: int) -> None:
    """Raise ``ValueError`` unless ``wrn_{depth}_{width}`` can be built."""
    if depth < 10 or (depth - 4) % 6 or width < 1:
        raise ValueError(f"'wrn_{depth}_{width}' is not a valid WideResNet: depth must be 6n+4 (10, 16, 22, 28, 34, "
                         "70...), width >= 1")
