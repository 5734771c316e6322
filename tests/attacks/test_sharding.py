"""How an evaluation is split over ranks (robustscale.attacks.sharding); the split itself on real gloo processes is
tests/sweep/test_eval_ranks.py."""

import pytest
import torch

from robustscale.attacks import Shard, pgd_accuracy
from robustscale.attacks.sharding import batch_generator, batch_seed, n_batches


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batches", [0, 1, 5, 8])
def test_every_batch_goes_to_exactly_one_rank(world_size, batches):
    dealt = [b for rank in range(world_size) for b in Shard(rank, world_size).mine(range(batches))]
    assert sorted(dealt) == list(range(batches))


def test_batch_seeds_are_fixed_distinct_and_fit_torch():
    seeds = [batch_seed(seed, b) for seed in (0, 1, 2**32 - 1) for b in range(50)]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    assert batch_seed(7, 3) == batch_seed(7, 3)
    a, b = batch_generator(7, 3, "cpu"), batch_generator(7, 3, "cpu")
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert n_batches(10, 5) == 2 and n_batches(11, 5) == 3


def test_a_rank_outside_the_group_is_refused():
    with pytest.raises(ValueError, match="rank 2"):
        Shard(2, 2)


def test_one_shard_alone_is_the_whole_evaluation_and_never_needs_a_group():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.rand(25, 3, 2, 2), torch.randint(0, 3, (25,))
    alone = pgd_accuracy(model, x, y, eps=0.1, steps=3, batch_size=10, seed=5, shard=Shard())
    assert alone == {**pgd_accuracy(model, x, y, eps=0.1, steps=3, batch_size=10, seed=5), "seconds": alone["seconds"]}
