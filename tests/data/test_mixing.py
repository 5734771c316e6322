"""MixedBatchSampler: a fixed synthetic share per batch, a pure function of (seed, step), sliced for DDP ranks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustscale.data import MixedBatchSampler, step_generator

FUZZ = settings(max_examples=60, deadline=None)


@FUZZ
@given(n_real=st.integers(1, 300), n_syn=st.integers(1, 1000), batch=st.integers(1, 64),
       fraction=st.floats(0.0, 1.0, exclude_max=True), seed=st.integers(0, 2**31), step=st.integers(0, 500))
def test_every_batch_has_the_synthetic_share(n_real, n_syn, batch, fraction, seed, step):
    s = MixedBatchSampler(n_real, n_syn, batch, fraction, seed)
    real, syn = s.batch(step)
    assert len(syn) == round(fraction * batch)
    assert len(real) + len(syn) == batch
    assert real.dtype == syn.dtype == torch.long
    assert ((0 <= real) & (real < n_real)).all() and ((0 <= syn) & (syn < n_syn)).all()
    assert s.steps_per_epoch == math.ceil(n_real / batch)


def test_no_synthetic_set_means_all_real():
    s = MixedBatchSampler(100, 0, 32, fraction=0.7)
    real, syn = s.batch(3)
    assert len(real) == 32 and len(syn) == 0


def test_steps_per_epoch_ignores_the_mix():
    assert MixedBatchSampler(50000, 10**6, 512, 0.7).steps_per_epoch == 98
    assert MixedBatchSampler(50000, 0, 512).steps_per_epoch == 98


def test_deterministic_from_seed_and_seeds_differ():
    a, b = MixedBatchSampler(1000, 5000, 64, 0.5, seed=3), MixedBatchSampler(1000, 5000, 64, 0.5, seed=3)
    c = MixedBatchSampler(1000, 5000, 64, 0.5, seed=4)
    for t in range(5):
        ra, sa = a.batch(t)
        rb, sb = b.batch(t)
        assert torch.equal(ra, rb) and torch.equal(sa, sb)
    diff = [not torch.equal(a.batch(t)[0], c.batch(t)[0]) or not torch.equal(a.batch(t)[1], c.batch(t)[1])
            for t in range(5)]
    assert all(diff)
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])  # steps differ too


def test_resume_is_stateless():
    """batch(t) is the same whether or not steps 0..t-1 were drawn (by this or any other instance)."""
    fresh = MixedBatchSampler(777, 3000, 50, 0.3, seed=11)
    late = [fresh.batch(t) for t in (40, 41, 17)]
    again = MixedBatchSampler(777, 3000, 50, 0.3, seed=11)
    for t in range(42):
        again.batch(t)
    for t, (r, s) in zip((40, 41, 17), late):
        assert torch.equal(again.batch(t)[0], r) and torch.equal(again.batch(t)[1], s)


@FUZZ
@given(n_real=st.integers(1, 400), batch=st.integers(1, 64), seed=st.integers(0, 1000), epoch=st.integers(0, 3))
def test_one_epoch_of_real_indices_covers_the_training_set(n_real, batch, seed, epoch):
    s = MixedBatchSampler(n_real, 0, batch, 0.0, seed)
    steps = s.steps_per_epoch
    seen = torch.cat([s.batch(epoch * steps + t)[0] for t in range(steps)])
    if epoch == 0 or n_real % batch == 0:
        assert set(seen.tolist()) == set(range(n_real))
    if n_real % batch == 0:  # epochs align with passes: each index exactly once
        assert sorted(seen.tolist()) == list(range(n_real))
    if epoch == 0:
        assert sorted(seen[:n_real].tolist()) == list(range(n_real))  # the first pass is a permutation


def test_real_indices_are_shuffled_per_pass():
    s = MixedBatchSampler(64, 0, 64, seed=0)
    first, second = s.batch(0)[0], s.batch(1)[0]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(64))
    assert not torch.equal(first, second) and not torch.equal(first, torch.arange(64))


@FUZZ
@given(n_real=st.integers(1, 300), n_syn=st.integers(0, 500), batch=st.integers(1, 96),
       fraction=st.floats(0.0, 1.0, exclude_max=True), world=st.integers(1, 8), seed=st.integers(0, 100),
       step=st.integers(0, 50))
def test_ddp_rank_slices_partition_the_global_batch(n_real, n_syn, batch, fraction, world, seed, step):
    if batch < world:
        with pytest.raises(ValueError):
            MixedBatchSampler(n_real, n_syn, batch, fraction, seed, rank=0, world_size=world)
        return
    full_real, full_syn = MixedBatchSampler(n_real, n_syn, batch, fraction, seed).batch(step)
    parts = [MixedBatchSampler(n_real, n_syn, batch, fraction, seed, rank=r, world_size=world).batch(step)
             for r in range(world)]
    assert torch.equal(torch.cat([p[0] for p in parts]), full_real)  # disjoint, in rank order, covering
    assert torch.equal(torch.cat([p[1] for p in parts]), full_syn)
    sizes = [len(p[0]) + len(p[1]) for p in parts]
    assert sum(sizes) == batch and max(sizes) - min(sizes) <= 2  # balanced up to one real and one synthetic


def test_bad_arguments():
    with pytest.raises(ValueError):
        MixedBatchSampler(0, 10, 8)
    with pytest.raises(ValueError):
        MixedBatchSampler(10, 10, 0)


def test_step_generator_is_a_function_of_seed_and_step():
    draw = lambda seed, step, stream=2: torch.rand(4, generator=step_generator(seed, step, stream=stream))  # noqa: E731
    assert torch.equal(draw(0, 5), draw(0, 5))
    assert not torch.equal(draw(0, 5), draw(0, 6))
    assert not torch.equal(draw(0, 5), draw(1, 5))
    assert not torch.equal(draw(0, 5), draw(0, 5, stream=3))


@pytest.mark.parametrize("n_syn, fraction, steps", [(0, 0.0, 7), (5, 0.5, 40), (500, 0.7, 9), (97, 0.3, 0)])
def test_unique_images_counts_what_the_batches_drew(n_syn, fraction, steps):
    """Issue 19: the record's unique images equal the distinct indices of every rank's batches, replayed."""
    world = 3
    samplers = [MixedBatchSampler(50, n_syn, 12, fraction, seed=4, rank=r, world_size=world) for r in range(world)]
    real, synth = set(), set()
    for step in range(steps):
        for s in samplers:
            r, sy = s.batch(step)
            real |= set(r.tolist())
            synth |= set(sy.tolist())
    assert samplers[0].unique_images(steps) == (len(real), len(synth))
    if n_syn == 5 and steps == 40:
        assert synth == set(range(5))  # a tiny set is used up: reuse, not new images
