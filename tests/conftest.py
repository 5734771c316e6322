"""Fixtures shared by every test folder. Keep this small: area-specific fixtures live in each folder's conftest."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One torch thread per test process (and per subprocess it starts): two threads on two shared cores oversubscribe,
# and the tiny digits models gain little from a second thread anyway.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def repo_root() -> Path:
    """The repository root (tests may run from any working directory)."""
    return REPO


@pytest.fixture
def digits_yaml() -> Path:
    """The shipped digits recipe, by absolute path."""
    return REPO / "configs" / "digits.yaml"


@pytest.fixture
def assert_one_line():
    """Check a user-facing error message is a single, non-empty line (the CLI prints it as ``error: ...``)."""

    def check(message) -> str:
        text = str(message).strip()
        assert text, "empty error message"
        assert len(text.splitlines()) == 1, f"multi-line error message: {text!r}"
        return text

    return check
