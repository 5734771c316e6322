"""Sweeps: a spec (base config x axes x zip x seeds) expanded into runs, run by local or Slurm executors that
coordinate through claims in the run folders, so a sweep can be killed, rerun and run twice at once."""

from robustscale.sweep.executors import Executor, LocalExecutor, SlurmExecutor, make_executor
from robustscale.sweep.progress import SweepProgress
from robustscale.sweep.run import plan_runs, sweep
from robustscale.sweep.spec import PlannedRun, SweepSpec, expand_runs, load_spec
from robustscale.sweep.worker import RunJob, run_one

__all__ = ["SweepSpec", "PlannedRun", "load_spec", "expand_runs", "run_one", "RunJob", "sweep", "plan_runs",
           "SweepProgress", "Executor", "LocalExecutor", "SlurmExecutor", "make_executor"]
