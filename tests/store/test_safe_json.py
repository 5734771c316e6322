"""JSON from run and sweep folders is read within bounds (store/safe_json.py, issue 34 item 3): a FIFO or a link where
a file belongs, a huge or deeply nested file, is refused with one typed line (or ignored where a reader starts over),
never followed, never blocking, never a RecursionError; and every reader of a run or sweep folder goes through it."""

import json

import pytest

from robustscale.errors import UserError
from robustscale.store.safe_json import JsonFileError, loads, read_bytes, read_json, read_json_lines


def test_a_json_file_reads_back(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"a": [1, 2.5, None, "x"], "nan": float("nan")}))
    obj = read_json(path)
    assert obj["a"] == [1, 2.5, None, "x"] and obj["nan"] != obj["nan"]
    with pytest.raises(FileNotFoundError):  # absent stays absent: callers tell it from bad
        read_json(tmp_path / "none.json")


def test_the_error_is_a_user_error_and_a_value_error():
    """One line at the command line; caught where readers already start over on a ValueError."""
    assert issubclass(JsonFileError, UserError) and issubclass(JsonFileError, ValueError)


def test_a_fifo_is_refused_without_blocking(tmp_path, planted_fifo):
    path = planted_fifo(tmp_path / "record.json", '{"status": "done"}')
    with pytest.raises(JsonFileError, match="FIFO"):
        read_json(path)


def test_a_link_is_refused_not_followed(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text('{"status": "done"}')
    (tmp_path / "record.json").symlink_to(target)
    (tmp_path / "zero.json").symlink_to("/dev/zero")  # followed, it would fill the memory
    for name in ("record.json", "zero.json"):
        with pytest.raises(JsonFileError, match="symbolic link"):
            read_json(tmp_path / name)


def test_a_folder_is_refused(tmp_path):
    (tmp_path / "record.json").mkdir()
    with pytest.raises(JsonFileError, match="folder"):
        read_json(tmp_path / "record.json")


def test_a_file_beyond_the_cap_is_refused(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 600 + "0]")
    assert len(read_json(path, max_bytes=2000)) == 601
    with pytest.raises(JsonFileError, match="larger than 1000 bytes"):
        read_json(path, max_bytes=1000)
    with pytest.raises(JsonFileError, match="larger than"):
        read_bytes(path, 10)


@pytest.mark.parametrize("depth", [65, 900, 100_000])
def test_nesting_beyond_64_levels_is_refused_without_recursion_error(tmp_path, depth):
    """100,000 levels raised RecursionError in the parser; 900 passed it and broke the first recursive walk."""
    for text in ("[" * depth + "]" * depth, '{"a": ' * depth + "1" + "}" * depth):
        with pytest.raises(JsonFileError, match="deeper than 64"):
            loads(text, "x.json")
    assert loads("[" * 64 + "]" * 64, "x.json") is not None


@pytest.mark.parametrize("data, words", [(b"\xff\xfe{}", "UTF-8"), (b"{", "not JSON"), (b"1" * 5000, "not JSON"),
                                         (b"", "not JSON")])
def test_bytes_that_are_not_json_are_one_line(tmp_path, assert_one_line, data, words):
    path = tmp_path / "x.json"
    path.write_bytes(data)
    with pytest.raises(JsonFileError) as err:
        read_json(path)
    assert words in assert_one_line(err.value) and "x.json" in str(err.value)


def test_json_lines_strict_names_the_line_and_lenient_skips_it(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epo')
    assert read_json_lines(path, strict=False) == [{"epoch": 1}, {"epoch": 2}]
    with pytest.raises(JsonFileError, match="line 4"):
        read_json_lines(path)


# ------------------------------------------------------------------------------------------------ every reader

def _record():
    return {"schema": 2, "run_id": "r", "status": "done", "config": {}}


def _plan():
    return {"schema": 1, "strategy": "envelope", "seed": 0, "metric": "pgd40_acc", "bins": 19,
            "rounds": [{"round": 1, "run_ids": ["a"]}]}


def _readers():
    """``(file name in a run or sweep folder, valid content, read(folder) -> what the reader made of it, what a
    reader that refuses the file gives)``; ``REFUSED`` means the reader raises a one-line error instead."""
    from robustscale.store.atomic import keep_lines
    from robustscale.store.adaptive_plan import read_plan
    from robustscale.store.record import read_record_json
    from robustscale.store.rundir import claim_info
    from robustscale.sweep.progress import _last_train_flops
    from robustscale.tracking.trackers import _read_state, _rows

    return {
        "record": ("record.json", json.dumps(_record()), read_record_json, None),
        "claim": ("claim.json", json.dumps({"pid": 1, "token": "t"}), claim_info, None),
        "plan": ("adaptive_plan.json", json.dumps(_plan()), read_plan, REFUSED),
        "trackers": ("trackers.json", json.dumps({"run_id": "r"}), _read_state, {}),
        "metrics rows": ("metrics.jsonl", '{"epoch": 1, "train_flops": 5.0}\n', lambda d: _rows(d / "metrics.jsonl"),
                         []),
        "metrics trim": ("metrics.jsonl", '{"epoch": 1}\n', lambda d: keep_lines(d / "metrics.jsonl", lambda r: True),
                         REFUSED),
        "progress": ("metrics.jsonl", '{"epoch": 1, "train_flops": 5.0}\n', _last_train_flops, 0.0),
    }


REFUSED = object()


@pytest.mark.parametrize("reader", list(_readers()))
@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_every_reader_of_a_run_folder_refuses_a_fifo_or_a_link(tmp_path, planted_fifo, assert_one_line, reader,
                                                                kind):
    """A FIFO fed valid content, or a link to a valid file elsewhere: each reader refuses it (before issue 34 each
    read it, blocking on the FIFO until a writer came, or following the link out of the folder)."""
    name, content, read, refused = _readers()[reader]
    folder = tmp_path / "run"
    folder.mkdir()
    if kind == "fifo":
        planted_fifo(folder / name, content)
    else:
        (tmp_path / "elsewhere").write_text(content)
        (folder / name).symlink_to(tmp_path / "elsewhere")
    if refused is REFUSED:
        with pytest.raises(UserError) as err:
            read(folder)
        assert "FIFO" in assert_one_line(err.value) or "symbolic link" in str(err.value)
    else:
        assert read(folder) == refused


def test_a_table_that_is_a_fifo_is_one_line(tmp_path, planted_fifo, capsys, assert_one_line):
    from robustscale.cli import main

    path = planted_fifo(tmp_path / "t.json", json.dumps([{"train_flops": 1e15, "autoattack_acc": 0.5}] * 3))
    assert main(["fit", str(path), "--bootstrap", "0"]) == 2
    assert "FIFO" in assert_one_line(capsys.readouterr().err)


def test_the_readers_named_in_the_module_are_the_ones_left():
    """No reader of a run or sweep folder parses JSON by itself any more (grep, as the issue asked): json.loads /
    read_text / read_bytes on a folder's files live in store/safe_json.py only."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "robustscale"
    allowed = {"store/safe_json.py",  # the reader itself
               "store/local_key.py",  # the key, read with its own bounds (item 4)
               "sweep/executors.py",  # a submitit job's stderr, for an error message
               "demo.py",  # the shipped demo spec
               "data/safe_pickle.py",  # CIFAR batches: a dataset, with its own restricted unpickler
               "accounting/backends.py",  # RAPL counters in /sys
               "models/factory.py"}  # model.kwargs, serialised by robustscale itself inside one process
    found = []
    for path in src.rglob("*.py"):
        name = path.relative_to(src).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"json\.loads?\(|\.read_text\(|\.read_bytes\(|pd\.read_json", line) and name not in allowed:
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == []
