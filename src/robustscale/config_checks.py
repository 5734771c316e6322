"""Limits a config must respect beyond each field's type and range: values the types allow but a run would crash on
(or silently misuse), refused when the config is read, with one line naming the key and the fix.

Each limit says why it is where it is. They are far from any value a real run uses: the paper trains with batch
512, 10-step attacks, eps 8/255 and seeds 0..2.
"""

from __future__ import annotations

import math
from typing import Any

from robustscale.enums import Norm

__all__ = ["MAX_BATCH", "MAX_SEED", "MAX_BINS", "RESERVED_MODEL_KWARGS", "check_model_kwargs", "check_limits"]

MAX_BATCH = 1 << 16  # images per (global or evaluation) batch; the paper's is 512, large-batch AT uses a few thousand
MAX_SEED = 2**32 - 1  # numpy's global seeding (np.random.seed) takes 32 bits
# equal-width log10(FLOP) bins of a law's envelope (fit, replay, report, an adaptive plan): the paper uses 19; 1000
# bins over ten decades are 0.01 decade wide, finer than any sweep spaces its runs (1e9 bins was a MemoryError)
MAX_BINS = 1000
# model.kwargs robustscale sets itself, or that would make timm read files (a crafted model file's metadata must not
# make `robustscale eval` load a pickle through timm's checkpoint_path)
RESERVED_MODEL_KWARGS = {
    "num_classes": "set from data.dataset", "in_chans": "set from data.dataset", "act_layer": "use model.act_layer",
    "pretrained": "robustscale trains from scratch", "pretrained_cfg": "robustscale trains from scratch",
    "pretrained_cfg_overlay": "robustscale trains from scratch", "checkpoint_path": "robustscale loads no weights",
    "cache_dir": "robustscale downloads nothing", "features_only": "a classifier is needed",
}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def check_model_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model.kwargs``: no key robustscale owns or that loads files; values are scalars or lists of scalars (what
    timm's constructors take, and what the FLOP counter can cache on)."""
    for key, value in kwargs.items():
        if key in RESERVED_MODEL_KWARGS:
            raise ValueError(f"'{key}' cannot be set here ({RESERVED_MODEL_KWARGS[key]}): remove it")
        if not (_scalar(value) or isinstance(value, list) and all(_scalar(v) for v in value)):
            raise ValueError(f"'{key}' must be a number, string, boolean, null or a list of those, "
                             f"not a {type(value).__name__}")
    return kwargs


def _fail(key: str, message: str) -> ValueError:
    return ValueError(f"config key '{key}': {message}")


def check_limits(cfg, info) -> None:
    """Cross-field limits of a :class:`robustscale.config.Config` for dataset ``info`` (before defaults that depend
    on them, such as the step size, are filled in). Raises ``ValueError`` naming the key (pydantic reports it)."""
    d = info.channels * cfg.data.image_size ** 2
    norm = cfg.attack.norm
    diameter = 1.0 if norm is Norm.linf else math.sqrt(d)  # of the image cube [0, 1]^d
    if cfg.attack.eps > diameter:
        raise _fail("attack.eps", f"{cfg.attack.eps:g} is larger than the whole [0, 1] pixel range ({diameter:g} in "
                                  f"{norm} for these images); eps is in pixel units, e.g. 8/255")
    if cfg.attack.step_size is not None and cfg.attack.step_size > 2.5 * diameter:
        raise _fail("attack.step_size", f"{cfg.attack.step_size:g} is more than 2.5 x the whole pixel range "
                                        f"({diameter:g} in {norm}); use at most {2.5 * diameter:g}, or null for 2.5 x "
                                        "eps / steps")
    if cfg.train.warmup_epochs > cfg.train.epochs:
        raise _fail("train.warmup_epochs", f"{cfg.train.warmup_epochs:g} is longer than the run (train.epochs="
                                           f"{cfg.train.epochs}); use at most train.epochs")
