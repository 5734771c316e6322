"""``launch``: a function on every rank of a local gloo group; a rank that raises stops the group and is named."""

import pytest
import torch
import torch.distributed as dist

from robustscale.training.distributed import cleanup, init_distributed
from robustscale.training.launch import RankFailed, launch

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ports")]  # see tests/conftest.py


def rank_1_gives_up() -> int:
    """Every rank joins the group from the environment launch() set; rank 1 raises while rank 0 waits on it."""
    info = init_distributed()
    try:
        assert (info.world_size, info.local_world_size, info.nodes) == (2, 2, 1)
        if info.rank == 1:
            raise ValueError(f"rank {info.rank} gives up")
        total = torch.tensor([1.0])
        dist.all_reduce(total)  # never completes: the launcher stops this rank
        return int(total.item())
    finally:
        cleanup()


def test_a_rank_that_raises_stops_the_group_and_is_named():
    """(Success, and rank 0's value coming back, is every DDP sweep test: tests/sweep/test_ddp.py.)"""
    with pytest.raises(RankFailed) as err:
        launch(rank_1_gives_up, (), 2, threads=1)
    assert err.value.rank == 1 and err.value.exit_code is None
    assert str(err.value) == "rank 1 of 2 raised ValueError: rank 1 gives up"
