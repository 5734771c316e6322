"""The local key that signs resume states (issue 34 item 4): trusted only as this user's private file, read within
bounds, never put in the working directory, and replaced when it is empty or cut short."""

import os

import pytest

from robustscale.store import local_key as lk


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of this test's own, and the working directory elsewhere."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path / "cache" / "robustscale" / "local.key"


def test_a_key_is_made_once_private_and_signs(cache):
    key = lk.local_key()
    assert len(key) == lk.KEY_BYTES and cache.read_bytes() == key and lk.local_key() == key
    assert oct(cache.stat().st_mode & 0o777) == "0o600" and oct(cache.parent.stat().st_mode & 0o077) == "0o0"
    signature = lk.sign({"a": 1})
    assert lk.signature_holds({"a": 1}, signature) and not lk.signature_holds({"a": 2}, signature)


@pytest.mark.parametrize("value", ["relative/cache", "", "."])
def test_a_relative_cache_home_is_ignored(cache, tmp_path, monkeypatch, value):
    """The XDG spec calls a relative XDG_CACHE_HOME invalid: the key went into the working directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert lk.key_path() == tmp_path / "home" / ".cache" / "robustscale" / "local.key"
    assert lk.local_key() is not None and list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"short", b"x" * 33, b"y" * (1 << 20)],
                         ids=["empty", "short", "long", "1MiB"])
def test_a_key_of_the_wrong_length_is_replaced(cache, content):
    """An empty or cut-short key (a full disk) made every state untrusted forever, silently."""
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    cache.chmod(0o600)
    key = lk.local_key()
    assert key is not None and len(key) == lk.KEY_BYTES and cache.read_bytes() == key
    assert lk.signature_holds({"a": 1}, lk.sign({"a": 1}))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o660])
def test_a_key_others_may_read_or_write_is_not_trusted(cache, caplog, mode):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"k" * lk.KEY_BYTES)
    cache.chmod(mode)
    assert lk.local_key() is None and lk.sign({"a": 1}) is None
    assert not lk.signature_holds({"a": 1}, lk._digest(b"k" * lk.KEY_BYTES, {"a": 1}))  # a forger knowing the key
    assert "chmod 600" in caplog.text
    assert cache.read_bytes() == b"k" * lk.KEY_BYTES  # the user's file is left for the user to fix


def test_a_link_is_not_followed(cache, tmp_path):
    elsewhere = tmp_path / "someone-elses.key"
    elsewhere.write_bytes(b"k" * lk.KEY_BYTES)
    elsewhere.chmod(0o600)
    cache.parent.mkdir(parents=True)
    cache.symlink_to(elsewhere)
    assert lk.local_key() is None


def test_a_fifo_is_not_read(cache, planted_fifo):
    """read_bytes() on a FIFO blocked until a writer came, then trusted what it wrote."""
    cache.parent.mkdir(parents=True)
    planted_fifo(cache, "k" * lk.KEY_BYTES)
    assert lk.local_key() is None


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="giving a file away needs root")
def test_a_key_of_another_user_is_not_trusted(cache):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"k" * lk.KEY_BYTES)
    cache.chmod(0o600)
    os.chown(cache, 4242, -1)
    assert lk.local_key() is None
