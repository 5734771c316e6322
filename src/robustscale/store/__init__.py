"""Run folders on disk: the record schema, atomic writes and claims, and the results table.

``results_table`` is imported on first use (it needs pandas; training, which writes records, does not).
"""

from robustscale.store.record import RECORD, SCHEMA_VERSION, Status, new_record, read_record, run_id, write_record
from robustscale.store.rundir import CLAIM, Claim, acquire_claim, claim, claim_is_live

__all__ = ["RECORD", "SCHEMA_VERSION", "Status", "new_record", "read_record", "run_id", "write_record", "CLAIM",
           "Claim", "acquire_claim", "claim", "claim_is_live", "results_table"]


def __getattr__(name: str):
    if name == "results_table":
        from robustscale.store.results import results_table

        return results_table
    raise AttributeError(f"module 'robustscale.store' has no attribute {name!r}")
