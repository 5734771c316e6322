"""Where the test suite's CPU goes (issue 29): by test, by file, and in the processes the tests start.

Runs README command 2's pytest (``-n 2 --dist loadgroup``, or the pytest arguments given after ``--``) with this file
as a pytest plugin that logs each test's CPU seconds (its own process, and the child processes it reaped), and with a
``sitecustomize`` on ``PYTHONPATH`` that logs every Python process the tests start (Slurm jobs too: sbatch exports
the environment; it shadows a ``sitecustomize`` the Python may have, for the run). A process killed by a signal
runs no exit handler and is not in the census, nor is a rank forked from multiprocessing's forkserver
(``training/launch.py``): it starts no interpreter and the server, not the test, reaps it, so its CPU is in the
machine's figure only. Then prints:

- the wall time, the CPU seconds of pytest's process tree, those of the whole machine (``/proc/stat``, so Slurm's
  jobs are in), and how busy the cores were;
- CPU by test file, and the costliest tests;
- the processes the tests started: how many, how many imported torch, their CPU, and what one Python process pays
  to start before it trains (``import robustscale.training`` and an optimizer, which imports ``torch._dynamo``);
- with ``--factor F --target-min T``: the wall time projected on a host F times slower, and the share of the suite's
  CPU that would have to go for T minutes there.

    python benchmarks/suite_cpu.py --factor 1.89 --target-min 10
    python benchmarks/suite_cpu.py --json -- tests/training -n 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOG_ENV = "ROBUSTSCALE_SUITE_CPU_LOG"  # the folder both loggers write to (named as such in PROCESS_LOGGER); unset, they do nothing
README_ARGS = ["-n", "2", "--dist", "loadgroup"]
# what a training process does before its first step, then its CPU seconds so far (as the logger counts: no teardown)
START_UP = ("import resource, torch, robustscale.training; "
            "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1); "
            "own = resource.getrusage(resource.RUSAGE_SELF); print(own.ru_utime + own.ru_stime)")


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _append(kind: str, row: dict) -> None:
    """One JSON line in this process's own file (no two processes append to one file)."""
    with open(Path(os.environ[LOG_ENV]) / f"{kind}.{os.getpid()}.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------- the two loggers

# Written as sitecustomize.py in the log folder, which the suite's environment puts on PYTHONPATH, so every Python
# process starting in it runs this first: at exit it logs its CPU, argv, whether it imported torch, and the test that
# started it (PYTEST_CURRENT_TEST, which a test's subprocess inherits). Standard library only.
PROCESS_LOGGER = """
import atexit, json, os, resource, sys, time
_t0, _test = time.time(), os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
def _log():
    own = resource.getrusage(resource.RUSAGE_SELF)
    row = {"test": _test, "argv": [os.path.basename(a) for a in sys.argv[:3]], "cpu": own.ru_utime + own.ru_stime,
           "wall": time.time() - _t0, "torch": "torch" in sys.modules}
    with open(os.path.join(os.environ["ROBUSTSCALE_SUITE_CPU_LOG"], f"procs.{os.getpid()}.jsonl"), "a") as fh:
        fh.write(json.dumps(row) + "\\n")
if "ROBUSTSCALE_SUITE_CPU_LOG" in os.environ:
    atexit.register(_log)
"""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """The plugin half (``-p suite_cpu``): each test's wall and CPU seconds, setup and teardown included, in the
    process that runs it (an xdist worker), and those of the child processes it reaped meanwhile."""
    if LOG_ENV not in os.environ:
        yield
        return
    t0, (own0, children0) = time.time(), _cpu()
    yield
    own1, children1 = _cpu()
    _append("tests", {"id": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", ""),
                      "wall": time.time() - t0, "own": own1 - own0, "children": children1 - children0})


def pytest_runtest_logreport(report):
    """A failed test's id (in whichever phase it failed), to name it beside the figures."""
    if LOG_ENV in os.environ and report.failed:
        _append("failed", {"id": report.nodeid, "when": report.when})


# ---------------------------------------------------------------------------------------------- the run


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of every core since boot, from /proc/stat; (0, 0) where there is none (also what
    benchmarks/ddp_cpu_sweep.py reads)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def start_up_cpu(reps: int = 3) -> float:
    """CPU seconds a Python process spends before it trains: the fewest of ``reps`` fresh processes."""
    runs = [subprocess.run([sys.executable, "-c", START_UP], check=True, cwd=REPO, capture_output=True, text=True)
            for _ in range(reps)]
    return min(float(done.stdout.split()[-1]) for done in runs)


def run_suite(pytest_args: list[str], logs: Path) -> dict:
    (logs / "sitecustomize.py").write_text(PROCESS_LOGGER)
    path = os.pathsep.join([str(logs), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, LOG_ENV: str(logs), "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "suite_cpu", *pytest_args]
    busy0, all0 = machine_cpu()
    t0, before = time.time(), _cpu()[1]
    done = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True)
    wall, tree = time.time() - t0, _cpu()[1] - before
    busy1, all1 = machine_cpu()
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    return {"command": " ".join(["pytest", *cmd[3:]]), "exit_status": done.returncode, "outcome": tail,
            "wall_s": wall, "pytest_tree_cpu_s": tree, "machine_busy_cpu_s": busy1 - busy0,
            "machine_busy": (busy1 - busy0) / max(all1 - all0, 1e-9)}


def _rows(logs: Path, kind: str) -> list[dict]:
    return [json.loads(line) for path in sorted(logs.glob(f"{kind}.*.jsonl")) for line in path.read_text().splitlines()]


def census(logs: Path, start_up_s: float, top: int) -> dict:
    tests = [{**row, "cpu": row["own"] + row["children"]} for row in _rows(logs, "tests")]
    by_file: dict[str, float] = defaultdict(float)
    for row in tests:
        by_file[row["id"].split("::")[0]] += row["cpu"]
    procs = [p for p in _rows(logs, "procs") if p["test"]]  # started by a test (pytest's own have none)
    with_torch = [p for p in procs if p["torch"]]
    by_test: dict[str, list[dict]] = defaultdict(list)
    for p in procs:
        by_test[p["test"]].append(p)
    return {
        "failed": sorted({f"{row['id']} ({row['when']})" for row in _rows(logs, "failed")}),
        "tests": len(tests),
        "tests_cpu_s": sum(r["cpu"] for r in tests),
        "tests_own_cpu_s": sum(r["own"] for r in tests),
        "by_file": dict(sorted(by_file.items(), key=lambda kv: -kv[1])[:top]),
        "costliest": [{"id": r["id"], "cpu_s": r["cpu"], "wall_s": r["wall"]}
                      for r in sorted(tests, key=lambda r: -r["cpu"])[:top]],
        "processes": len(procs), "processes_with_torch": len(with_torch),
        "processes_cpu_s": sum(p["cpu"] for p in procs),
        "median_torch_process_cpu_s": statistics.median(p["cpu"] for p in with_torch) if with_torch else None,
        "start_up_cpu_s": start_up_s,
        "start_up_share_cpu_s": sum(min(start_up_s, p["cpu"]) for p in with_torch),
        "processes_by_test": [{"test": test, "processes": len(ps), "with_torch": sum(p["torch"] for p in ps),
                               "cpu_s": sum(p["cpu"] for p in ps), "argv": sorted({" ".join(p["argv"]) for p in ps})}
                              for test, ps in sorted(by_test.items(), key=lambda kv: -sum(p["cpu"] for p in kv[1]))
                              ][:top],
    }


def project(out: dict, factor: float | None, target_min: float | None) -> dict:
    if factor is None:
        return {}
    projected = {"factor": factor, "projected_wall_min": out["wall_s"] * factor / 60}
    if target_min is not None:
        needed = target_min * 60 / factor
        projected.update(target_min=target_min, wall_needed_here_s=needed,
                         cpu_cut_needed=max(0.0, 1 - needed / out["wall_s"]))
    return projected


def _short(test_id: str, width: int = 160) -> str:
    """A test id cut to ``width`` characters (a parametrized id can hold a whole YAML document)."""
    return test_id if len(test_id) <= width else test_id[:width - 3] + "..."


def _print(out: dict) -> None:
    print(f"{out['command']}: {out['outcome']}")
    print(f"wall {out['wall_s']:.1f} s; CPU: pytest's processes {out['pytest_tree_cpu_s']:.0f} s, the machine "
          f"{out['machine_busy_cpu_s']:.0f} s ({out['machine_busy']:.0%} of its cores busy)")
    c = out["census"]
    for failed in c["failed"]:
        print(f"FAILED {_short(failed)}")
    print(f"{c['tests']} tests, {c['tests_cpu_s']:.0f} CPU-s ({c['tests_own_cpu_s']:.0f} in the tests' own processes)")
    print("by file:")
    for name, cpu in c["by_file"].items():
        print(f"  {cpu:7.1f} s  {name}")
    print("costliest tests (CPU s, wall s):")
    for row in c["costliest"]:
        print(f"  {row['cpu_s']:6.1f} {row['wall_s']:6.1f}  {_short(row['id'])}")
    print(f"processes the tests started (that exited normally): {c['processes']}, {c['processes_with_torch']} "
          f"importing torch, {c['processes_cpu_s']:.0f} CPU-s; a training process's start-up {c['start_up_cpu_s']:.2f} "
          f"CPU-s, so about {c['start_up_share_cpu_s']:.0f} CPU-s of start-ups")
    print("tests that started processes (processes, with torch, CPU s, what):")
    for row in c["processes_by_test"]:
        print(f"  {row['processes']:3d} {row['with_torch']:3d} {row['cpu_s']:6.1f}  {_short(row['test'])}: "
              f"{'; '.join(row['argv'])}"[:240])
    p = out.get("projection") or {}
    if p:
        line = f"at {p['factor']}x: {p['projected_wall_min']:.1f} min"
        if "target_min" in p:
            line += (f"; {p['target_min']:g} min there needs {p['wall_needed_here_s']:.0f} s here, "
                     f"{p['cpu_cut_needed']:.0%} less")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, help="how many times slower the host to project onto is")
    parser.add_argument("--target-min", type=float, help="the suite's target wall time there, in minutes")
    parser.add_argument("--top", type=int, default=15, help="files and tests to list")
    parser.add_argument("--json", action="store_true")
    args, rest = parser.parse_known_args()
    pytest_args = [a for a in rest if a != "--"] or README_ARGS
    with tempfile.TemporaryDirectory(prefix="suite-cpu-") as folder:
        logs = Path(folder)
        out = run_suite(pytest_args, logs)
        out["census"] = census(logs, start_up_cpu(), args.top)
    out["projection"] = project(out, args.factor, args.target_min)
    out.update(load=os.getloadavg(), python=sys.version.split()[0])
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(out)


if __name__ == "__main__":
    main()
