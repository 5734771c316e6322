"""random_crop_flip: batched zero-padded random crops and horizontal flips, reproducible from a generator."""

import pytest
import torch
import torch.nn.functional as F

from robustscale.data import random_crop_flip


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=16, c=3, h=8, w=10, seed=0):
    return torch.rand(n, c, h, w, generator=_gen(seed))


@pytest.mark.parametrize("padding,flip", [(0, False), (0, True), (1, False), (4, True)])
def test_shape_and_range(padding, flip):
    x = _images()
    out = random_crop_flip(x, padding, flip, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_no_padding_no_flip_is_identity():
    x = _images()
    assert torch.equal(random_crop_flip(x, 0, False, _gen()), x)


def test_deterministic_given_the_generator():
    x = _images(64)
    a = random_crop_flip(x, 2, True, _gen(5))
    b = random_crop_flip(x, 2, True, _gen(5))
    c = random_crop_flip(x, 2, True, _gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _candidates(img, padding, flip):
    """Every crop of the zero-padded image (and of its mirror when flips are on)."""
    h, w = img.shape[-2:]
    sources = [img, img.flip(-1)] if flip else [img]
    for src in sources:
        padded = F.pad(src, (padding,) * 4)
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                yield padded[:, dy:dy + h, dx:dx + w]


@pytest.mark.parametrize("padding,flip", [(1, False), (2, True), (3, False)])
def test_each_output_is_a_shifted_copy(padding, flip):
    x = _images(32)
    out = random_crop_flip(x, padding, flip, _gen(1))
    for img, o in zip(x, out):
        assert any(torch.equal(o, cand) for cand in _candidates(img, padding, flip))
    moved = sum(not torch.equal(o, img) for img, o in zip(x, out))
    assert moved >= len(x) // 2  # it augments: most outputs are not the input


def test_single_bright_pixel_moves_at_most_padding():
    padding, n = 3, 200
    x = torch.zeros(n, 3, 16, 16)
    x[:, :, 7, 9] = 1.0
    out = random_crop_flip(x, padding, False, _gen(2))
    shifts = set()
    for o in out:
        assert torch.equal(o[0], o[1]) and torch.equal(o[0], o[2])  # channels move together
        where = (o[0] == 1.0).nonzero()
        assert len(where) == 1 and o.sum() == 3.0  # inside the crop at these offsets: moved, never lost or blurred
        dy, dx = where[0, 0].item() - 7, where[0, 1].item() - 9
        assert abs(dy) <= padding and abs(dx) <= padding
        shifts.add((dy, dx))
    assert len(shifts) > 20  # offsets are spread over the (2p+1)^2 = 49 choices


def test_flip_mirrors_about_half():
    x = torch.zeros(400, 1, 4, 6)
    x[:, :, 1, 0] = 1.0
    out = random_crop_flip(x, 0, True, _gen(3))
    flipped = (out[:, 0, 1, 5] == 1.0).sum().item()
    kept = (out[:, 0, 1, 0] == 1.0).sum().item()
    assert flipped + kept == 400 and 140 < flipped < 260
