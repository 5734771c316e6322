"""Run folders on disk: the run record, atomic writes and claims, and the results table.

``results_table`` and ``read_paper_table`` (the paper's own results.csv in the same columns) are imported on first use
(PEP 562): they need pandas, and training, which writes records through this package, does not.
"""

from importlib import import_module

from robustscale.store.record import RECORD, SCHEMA_VERSION, RunRecord, Status, read_record, write_record

__all__ = ["RECORD", "SCHEMA_VERSION", "RunRecord", "Status", "read_record", "write_record", "results_table",
           "read_paper_table"]

_LAZY = {"results_table": "robustscale.store.results", "read_paper_table": "robustscale.store.paper_table"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'robustscale.store' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
