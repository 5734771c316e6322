"""Fixtures shared by every test folder. Keep this small: area-specific fixtures live in each folder's conftest."""

import os
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Property tests: random exploration locally (each run tries new inputs; failures are kept in .hypothesis/ and
# replayed first), the same fixed inputs in CI (`CI` set, as CI services do), so CI never passes or fails by luck.
# Every input a random run ever found failing is pinned with @example next to its test. Registered here, before any
# test module builds its own `settings(...)`, which inherit from the profile loaded now.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# One torch thread per test process (and per subprocess it starts): two threads on two shared cores oversubscribe,
# and the tiny digits models gain little from a second thread anyway. Under pytest-xdist (README's test command,
# `-n 2 --dist loadgroup`) every worker imports this file, and `one_torch_thread` below puts it back before each test,
# whatever a test before it on the same worker set.
# The tests that bind a TCP port or start gloo/DDP/submitit processes carry `@pytest.mark.xdist_group("ports")`: one
# worker runs them all, one at a time, because a free port picked by one of them (torchrun's
# --master_port, submitit's port from the job id) could be taken by another's rendezvous or gloo connections before
# it is bound. And since `--dist loadgroup` schedules every other test on its own, both workers would build a costly
# module-scoped fixture (a trained model, the paper grid's dry run, a report) when its module's tests land on both:
# such modules carry `pytestmark = pytest.mark.xdist_group("<module>")`, and one worker builds it once.
# torch itself is imported by the first test module that needs it, not here: xdist's controller process, which runs
# no test, reads this file too.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    """Refuse ``--dist loadgroup`` where it does not group: with pytest 9.2, pytest-xdist 3.8 no longer tags a test
    with its group (pytest-xdist issue 1386), so the "ports" tests would run on both workers at once, racing for
    ports, with nothing to say so. The test extra pins pytest below 9.2 for it."""
    if config.getoption("dist", None) != "loadgroup":
        return
    pytest_version, xdist_version = (tuple(int(n) for n in version(name).split(".")[:2]) for name in
                                     ("pytest", "pytest-xdist"))
    if pytest_version >= (9, 2) and xdist_version <= (3, 8):
        raise pytest.UsageError(f"pytest {version('pytest')} with pytest-xdist {version('pytest-xdist')}: --dist "
                                "loadgroup would not group the tests that bind ports (pytest-xdist issue 1386); "
                                "install 'pytest<9.2' (pip install -e '.[test]' does)")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread for every test (``bench(threads=...)`` and in-process sweeps set it and keep it)."""
    import torch

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


@pytest.fixture
def planted_fifo():
    """``plant(path, text)``: a FIFO at ``path`` that a reader opening it the blocking way (``open()``) reads ``text``
    from, fed by a thread until the test ends. A reader that refuses FIFOs never gets ``text``: a test can tell the two
    apart without waiting forever on a reader that blocks."""
    import threading
    import time

    threads, done = [], threading.Event()

    def feed(path, data: bytes) -> None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not done.is_set():
            try:  # non-blocking: succeeds only while a reader has the FIFO open
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.01)
                continue
            try:
                os.set_blocking(fd, True)
                os.write(fd, data)
            except OSError:  # the reader closed it at once (BrokenPipeError): a reader that refuses FIFOs
                pass
            finally:
                os.close(fd)
            return

    def plant(path, text: str):
        os.mkfifo(path)
        thread = threading.Thread(target=feed, args=(path, text.encode()), daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield plant
    done.set()  # the test is over: a reader that blocked on the FIFO has had its text
    for thread in threads:
        thread.join(timeout=5)
