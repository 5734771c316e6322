"""Sweeps: a spec (base config x axes x zip x seeds) expanded into runs, run by local or Slurm executors that
coordinate through claims in the run folders, so a sweep can be killed, rerun and run twice at once."""

from robustscale.sweep.executors import Executor, LocalExecutor, SlurmExecutor, make_executor
from robustscale.sweep.run import RunJob, SweepProgress, plan_runs, run_one, sweep
from robustscale.sweep.spec import PlannedRun, SweepSpec, expand, expand_runs, load_spec

__all__ = ["SweepSpec", "PlannedRun", "load_spec", "expand", "expand_runs", "run_one", "RunJob", "sweep", "plan_runs",
           "SweepProgress", "Executor", "LocalExecutor", "SlurmExecutor", "make_executor"]
