"""Atomic writes: a reader sees the old file or the new one, never half of one, and no temp file is left behind."""

import json
import os

import pytest

from robustscale.store.atomic import append_line, atomic_path, write_bytes, write_json, write_text


def test_write_gives_the_full_content_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "blob.bin"
    data = os.urandom(1 << 20)
    assert write_bytes(path, data) == path
    assert path.read_bytes() == data
    write_text(path, "short")  # replacing a longer file leaves no tail of it
    assert path.read_text() == "short"
    assert os.listdir(path.parent) == ["blob.bin"]


def test_write_json(tmp_path):
    path = write_json(tmp_path / "r.json", {"acc": 0.5, "nan": float("nan"), "path": tmp_path})
    obj = json.loads(path.read_text())
    assert obj["acc"] == 0.5 and obj["path"] == str(tmp_path)
    assert path.read_text().endswith("\n")


def test_exception_keeps_the_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old content")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp != path
            tmp.write_text("new half-written con")
            raise RuntimeError("crash")
    assert path.read_text() == "old content"
    assert os.listdir(tmp_path) == ["state.json"]


def test_exception_on_first_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "new.bin", suffix=".safetensors") as tmp:
            assert tmp.name.endswith(".safetensors")  # libraries that check the extension accept it
            tmp.write_bytes(b"x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_file_is_replaced_only_on_success(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("v1")
    with atomic_path(path) as tmp:
        tmp.write_text("v2")
        assert path.read_text() == "v1"  # not visible until the block ends
    assert path.read_text() == "v2"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_append_line(tmp_path):
    path = tmp_path / "log.jsonl"
    append_line(path, '{"step": 1}')
    append_line(path, '{"step": 2}\n')
    assert path.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']
