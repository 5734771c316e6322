"""A real single-node Slurm for the tests in this folder: the one running here, else brought up by
``scripts/slurm-local.sh`` where it can be (root, apt-get: CI runs the script before the suite), else every test here
skips and prints why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
PARTITION = "debug"
BRING_UP_S = 900  # apt-get install included


def _node_up() -> str | None:
    """None when partition ``debug`` has a node that takes jobs; else what is missing."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no sinfo/sbatch on PATH"
    try:
        done = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%t"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo: {err}"
    states = done.stdout.split()
    if done.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"no node up in partition {PARTITION} ({(done.stderr or done.stdout).strip() or 'none'})"
    return None


def _bring_up() -> str | None:
    """None when Slurm is up (started by the script if needed); else why not, in one line."""
    missing = _node_up()
    if missing is None:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return (f"{missing}, and {SCRIPT.relative_to(REPO)} needs root and apt-get to bring one up: run it as root "
                "(Debian/Ubuntu) to test the Slurm path")
    try:
        done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=BRING_UP_S)
    except subprocess.TimeoutExpired:
        return f"{SCRIPT.relative_to(REPO)} did not bring Slurm up within {BRING_UP_S} s"
    lines = (done.stderr or done.stdout).strip().splitlines()
    if done.returncode != 0:
        return lines[-1] if lines else f"{SCRIPT.relative_to(REPO)} failed ({done.returncode})"
    return _node_up()


@pytest.fixture(scope="session")
def slurm(request) -> str:
    """The partition of a live single-node Slurm (``debug``); skips, printing why, where there is none."""
    reason = _bring_up()
    if reason is not None:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nSKIP tests/slurm: {reason}")
        pytest.skip(reason)
    return PARTITION
