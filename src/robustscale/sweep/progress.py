"""A live view of a sweep, polled from its run folders: done / running / failed / pending, FLOPs and energy so far,
and an ETA; a live table on a terminal, a plain line per finished run elsewhere."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from rich.live import Live
from rich.table import Table

from robustscale.enums import Status
from robustscale.errors import UserError
from robustscale.store.record import RunRecord, read_record
from robustscale.store.safe_json import loads, open_regular

__all__ = ["SweepProgress"]


def _last_train_flops(run_dir: Path) -> float:
    """FLOPs so far of a running run: the last line of its metrics.jsonl (records are written at the end)."""
    try:
        with os.fdopen(open_regular(run_dir / "metrics.jsonl"), "rb") as fh:  # never a FIFO or a link: no hang
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            last = fh.read(4096).decode(errors="replace").strip().splitlines()[-1]
        return float(loads(last, run_dir / "metrics.jsonl").get("train_flops") or 0.0)
    except (OSError, IndexError, ValueError, AttributeError, TypeError):
        return 0.0


class SweepProgress:
    """A live view of a sweep (done / running / failed / pending, FLOPs and energy so far, ETA), polled from disk.

    It reads only the run folders, so it shows the work of every worker on them, local processes and Slurm jobs
    alike. On a terminal it is a live table; elsewhere (a CI log, ``nohup``, a Slurm output file) one plain line on
    stderr each time a run finishes. A no-op unless ``enabled``.
    """

    def __init__(self, run_dirs: Sequence[Path], enabled: bool = True, refresh_s: float = 1.0):
        self.run_dirs, self.refresh_s, self.enabled = list(run_dirs), refresh_s, enabled
        self._live = self._thread = None
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._finished_at_start = 0

    def snapshot(self) -> dict[str, Any]:
        counts = {s.value: 0 for s in Status}
        flops = energy = 0.0
        for run_dir in self.run_dirs:
            record = read_record(run_dir) or RunRecord(run_dir.name, {})
            counts[record.status.value] += 1
            running = record.status is Status.running
            flops += _last_train_flops(run_dir) if running else float(record.accounting.train_flops or 0.0)
            energy += float(record.accounting.energy_kwh or 0.0)
        finished = counts["done"] + counts["failed"]
        remaining = len(self.run_dirs) - finished
        new = finished - self._finished_at_start
        elapsed = time.monotonic() - self._t0
        eta = elapsed / new * remaining if new > 0 else None
        return {**counts, "total": len(self.run_dirs), "train_flops": flops, "energy_kwh": energy,
                "elapsed_s": elapsed, "eta_s": eta}

    def _render(self) -> Table:
        s = self.snapshot()
        table = Table(title=f"sweep: {s['total']} runs", show_header=True, header_style="bold")
        for column in ("done", "running", "failed", "pending", "FLOPs", "kWh", "elapsed", "ETA"):
            table.add_column(column, justify="right")
        eta = "-" if s["eta_s"] is None else _duration(s["eta_s"])
        table.add_row(f"[green]{s['done']}", f"[cyan]{s['running']}", f"[red]{s['failed']}", str(s["pending"]),
                      f"{s['train_flops']:.2e}", f"{s['energy_kwh']:.3g}", _duration(s["elapsed_s"]), eta)
        return table

    def line(self, s: dict[str, Any]) -> str:
        """The plain-text view: ``[0:02:10] 12/27 done, 2 running, 0 failed, 3.1e+12 FLOPs, ETA 0:02:40``."""
        eta = "-" if s["eta_s"] is None else _duration(s["eta_s"])
        return (f"[{_duration(s['elapsed_s'])}] {s['done']}/{s['total']} done, {s['running']} running, "
                f"{s['failed']} failed, {s['train_flops']:.2e} FLOPs, ETA {eta}")

    def _log_lines(self) -> None:
        last = None
        while not self._stop.wait(5 * self.refresh_s):
            s = self.snapshot()
            if (s["done"], s["failed"]) != last:
                last = (s["done"], s["failed"])
                print(self.line(s), file=sys.stderr, flush=True)

    def __enter__(self) -> "SweepProgress":
        if self.enabled:
            s = self.snapshot()
            self._finished_at_start = s["done"] + s["failed"]
            if sys.stdout.isatty():
                self._live = Live(get_renderable=self._render, refresh_per_second=1 / self.refresh_s)
                self._live.__enter__()
            else:
                self._thread = threading.Thread(target=self._log_lines, name="sweep-progress", daemon=True)
                self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            if not isinstance(exc[1], UserError):  # refused before anything ran: the error's one line says it all
                print(self.line(self.snapshot()), file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"
