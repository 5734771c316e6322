"""A finished demo's timings as a recording the start-up estimate is tested on (tests/demo_timings.json).

    python benchmarks/demo_timings.py runs/demo [--load-log FILE] [--name NAME] [--append tests/demo_timings.json]

Reads ``timings.json`` (the demo writes it: its estimate, the probe's CPU seconds, the load average at the start,
wall seconds per step, CPU seconds) and every run's record: its planned FLOPs as the estimate prices them
(:func:`robustscale.demo.planned_flops`) and the CPU seconds it used (the record's CPU energy where it is the
process estimate, ``CPU_WATTS_PER_CORE`` per CPU-second: energy / watts gives the seconds back; else its metered wall
seconds, flagged). ``--load-log`` is a file of ``HH:MM:SS load1 load5 load15`` lines sampled during the demo (``while
sleep 15; do echo "$(date +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done``): the mean 1-minute load over the sweep less
the demo's own workers is the background load the runs shared the cores with. Prints the recording and how the
estimate compares, with the load it saw at the start and with that background load.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from robustscale.accounting.backends import CPU_WATTS_PER_CORE, J_PER_KWH
from robustscale.demo import expected_s, planned_flops
from robustscale.store.record import Status, read_record
from robustscale.sweep.spec import expand_runs, load_spec
from robustscale.training.run_config import config_from_dict


def run_row(run_dir: Path) -> dict[str, Any] | None:
    record = read_record(run_dir)
    if record is None or record.status is not Status.done:
        return None
    acc = record.accounting
    estimated = (acc.energy_sources or {}).get("cpu") == "process-estimate" and not acc.energy_kwh_gpu
    core_s = acc.total_energy_kwh_it * J_PER_KWH / CPU_WATTS_PER_CORE if estimated else acc.total_metered_s
    return {"run_id": record.run_id, **planned_flops(config_from_dict(record.config)), "core_s": round(core_s, 2),
            "core_s_from": "cpu-time" if estimated else "wall"}


def background_load(log: Path, timings: dict[str, Any]) -> float | None:
    """Mean 1-minute load during the sweep (the log's lines from the end of start-up and synthesis to the end of the
    sweep, counted back from the end of the file's last line at the demo's end) less the sweep's workers."""
    lines = [line.split() for line in log.read_text().splitlines() if len(line.split()) == 4]
    if not lines:
        return None
    per_line_s = 15.0
    phases = timings["phases_s"]
    skip_head = int((phases.get("start", 0) + phases.get("synthetic", 0)) / per_line_s)
    skip_tail = int(phases.get("analysis", 0) / per_line_s)
    sweep = [float(line[1]) for line in lines[skip_head:len(lines) - skip_tail]] or [float(lines[-1][1])]
    return max(0.0, statistics.mean(sweep) - timings["workers"])


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="the demo's folder (runs/demo)")
    parser.add_argument("--load-log", type=Path)
    parser.add_argument("--name", default="")
    parser.add_argument("--append", type=Path, help="add the recording to this fixture file")
    args = parser.parse_args()
    timings = json.loads((args.demo / "timings.json").read_text())
    order = [run.run_id for run in expand_runs(load_spec(args.demo / "spec.yaml"))]  # the sweep's order
    rows = [row for run_id in order if (row := run_row(args.demo / "runs" / run_id)) is not None]
    load = background_load(args.load_log, timings) if args.load_log else None
    record = read_record(args.demo / "runs" / order[0])
    host = f"{record.hardware.cpu if record else '?'}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    recording = {"name": args.name, "host": host,
                 **{k: _rounded(timings[k]) for k in ("wall_s", "probe_cpu_s", "load_start", "cores", "workers",
                                                      "phases_s", "cpu_s", "estimate_s")},
                 "load_background": _rounded(load), "synthetic_ready": timings["phases_s"].get("synthetic", 0) < 1.0,
                 "runs": rows}
    flops = [{k: r[k] for k in ("train", "eval", "autoattack_step", "autoattack")} for r in rows]
    kw = dict(workers=timings["workers"], probe_cpu_s=timings["probe_cpu_s"], cores=timings["cores"],
              synthetic_ready=recording["synthetic_ready"])
    print(f"{len(rows)} runs, {sum(r['core_s'] for r in rows):.0f} core-s in the runs; demo wall "
          f"{timings['wall_s']:.0f} s; estimate at the start {timings['estimate_s']:.0f} s (load "
          f"{timings['load_start']:.1f})" + (f", with the background load {load:.1f}: "
                                             f"{expected_s(flops, load=load, **kw):.0f} s" if load is not None else ""))
    if args.append:
        fixture = json.loads(args.append.read_text()) if args.append.exists() else {"recordings": []}
        fixture["recordings"].append(recording)
        args.append.write_text(json.dumps(fixture, indent=1) + "\n")
    else:
        print(json.dumps(recording, indent=1))


if __name__ == "__main__":
    main()
