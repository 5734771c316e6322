"""Adversarial training: losses (standard, PGD-AT, TRADES), EMA, the loop, checkpoints, DDP."""

from robustscale.training.loop import train, train_step

__all__ = ["train", "train_step", "resolve_run"]


def resolve_run(config_or_run, overrides=None, out=None, resume: bool = False):
    """``(cfg, run_dir, resume)`` from the CLI's arguments: a config file (new run, or ``--resume`` of ``--out``), or
    a run folder (``robustscale train --resume RUN_DIR``), whose saved config is used."""
    from pathlib import Path

    from robustscale.config import load_config
    from robustscale.errors import UserError
    from robustscale.store.record import run_id
    from robustscale.config import config_to_dict

    path = Path(config_or_run)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise UserError(f"'{path}' is a folder but not a run folder (no config.yaml): pass a YAML config or a run")
        if overrides:
            raise UserError("overrides cannot change a run being resumed: start a new run with the changed config")
        return load_config(path / "config.yaml"), path, True
    cfg = load_config(path, overrides or [])
    run_dir = Path(out) if out is not None else cfg.output.dir / run_id(config_to_dict(cfg))
    if resume and not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume: '{run_dir}' holds no run to resume; drop --resume to start it")
    return cfg, run_dir, resume
