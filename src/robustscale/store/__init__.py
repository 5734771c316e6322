"""Run folders on disk: the record schema, atomic writes and claims, and the results table.

``results_table`` and ``read_paper_table`` (the paper's own results.csv in the same columns) are imported on first use
(they need pandas; training, which writes records, does not).
"""

from robustscale.store.record import RECORD, SCHEMA_VERSION, Status, new_record, read_record, run_id, write_record
from robustscale.store.rundir import CLAIM, Claim, acquire_claim, claim, claim_is_live

__all__ = ["RECORD", "SCHEMA_VERSION", "Status", "new_record", "read_record", "run_id", "write_record", "CLAIM",
           "Claim", "acquire_claim", "claim", "claim_is_live", "results_table", "read_paper_table"]


def __getattr__(name: str):
    if name == "results_table":
        from robustscale.store.results import results_table

        return results_table
    if name == "read_paper_table":
        from robustscale.store.paper_table import read_paper_table

        return read_paper_table
    raise AttributeError(f"module 'robustscale.store' has no attribute {name!r}")
