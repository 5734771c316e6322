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


@pytest.fixture
def umask():
    """Set the process umask for a test and put it back."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask):
        os.umask(mask)

    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode):
    """Item 10 of issue 20: checkpoints came out 0600 (safetensors writes a new file over mkstemp's), so a run folder
    shared with a group could not be read by it; claims were 0644 whatever the umask."""
    import torch

    from robustscale.store.atomic import atomic_path, write_text
    from robustscale.store.rundir import create_exclusive
    from robustscale.training.checkpoint import save_checkpoint

    umask(mask)
    write_text(tmp_path / "a.txt", "x")
    save_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(2)})
    with atomic_path(tmp_path / "d.bin") as tmp:
        tmp.write_bytes(b"d")
    create_exclusive(tmp_path / "claim.json", b"{}")
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.txt", "c.safetensors", "d.bin", "claim.json"], mode)


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path):
    from robustscale.store.atomic import remove_stale_temp_files

    stale = [tmp_path / ".checkpoint.safetensors.k2j3h4.tmp.safetensors", tmp_path / ".record.json.x1y2.tmp"]
    kept = [tmp_path / "checkpoint.safetensors", tmp_path / ".claim.json.abc.new", tmp_path / ".claim.lock",
            tmp_path / "notes.tmp"]
    for path in stale + kept:
        path.write_text("x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_keep_lines_drops_rows_and_a_torn_last_line(tmp_path):
    from robustscale.store.atomic import keep_lines

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')
    assert keep_lines(log, lambda row: row["epoch"] <= 2) == 2
    assert log.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert keep_lines(tmp_path / "missing.jsonl", lambda row: True) == 0 and not (tmp_path / "missing.jsonl").exists()


def test_writing_over_a_folder_is_one_line(tmp_path, assert_one_line):
    from robustscale.errors import UserError
    from robustscale.store.atomic import write_text

    with pytest.raises(UserError) as err:
        write_text(tmp_path, "x")
    assert "is a folder" in assert_one_line(err.value)
