"""3D DiffAugment and ADA's adaptive probability."""

from __future__ import annotations

import pytest
import torch

from training.augment import AdaptiveAugment, augment
from training.config import AUGMENTATIONS


def _volumes() -> torch.Tensor:
    return torch.rand(4, 1, 8, 16, 16, generator=torch.Generator().manual_seed(0))


def test_probability_zero_leaves_every_volume_unchanged():
    x = _volumes()
    assert torch.equal(augment(x, 0.0, AUGMENTATIONS, torch.Generator().manual_seed(1)), x)


def test_probability_one_changes_every_volume_reproducibly_and_passes_gradients():
    x = _volumes().requires_grad_(True)
    a = augment(x, 1.0, AUGMENTATIONS, torch.Generator().manual_seed(1))
    b = augment(x, 1.0, AUGMENTATIONS, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert all(not torch.equal(a[i], x[i]) for i in range(4))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_flip_mirrors_the_left_right_axis_in_about_half_the_volumes():
    x = _volumes()
    flipped = 0
    for seed in range(20):
        y = augment(x, 1.0, ("flip",), torch.Generator().manual_seed(seed))
        for i in range(4):
            assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(2))
            flipped += torch.equal(y[i], x[i].flip(2))
    assert 20 <= flipped <= 60  # of 80: a fair coin per volume, not never and not always


def test_ada_raises_p_while_d_is_confident_on_reals_and_lowers_it_otherwise():
    ada = AdaptiveAugment(p=0.0, target=0.6, interval=1, kimg=1.0, batch=10)  # step size 10 / 1000
    ada.observe(sign_sum=9.0, count=10.0)
    ada.update(step=0)
    assert ada.p == pytest.approx(0.01)
    ada.observe(sign_sum=2.0, count=10.0)
    ada.update(step=1)
    ada.observe(sign_sum=2.0, count=10.0)
    ada.update(step=2)
    assert ada.p == 0.0


def test_a_fixed_probability_never_moves():
    ada = AdaptiveAugment(p=0.5, target=0.0, interval=1, kimg=1.0, batch=10)
    ada.observe(10.0, 10.0)
    ada.update(0)
    assert ada.p == 0.5


def test_a_cutout_box_is_half_of_each_axis_as_in_the_reference():
    # The reference cuts out int(size / 2 + 0.5) voxels per axis (clipped at the edges): 4 x 8 x 8 here.
    x = torch.ones(64, 1, 8, 16, 16)
    y = augment(x, 1.0, ("cutout",), torch.Generator().manual_seed(0))
    extents = []
    for sample in y[:, 0]:
        zero = (sample == 0).nonzero()
        extents.append(tuple((zero.max(0).values - zero.min(0).values + 1).tolist()))
    assert max(e[0] for e in extents) == 4 and max(e[1] for e in extents) == 8 and max(e[2] for e in extents) == 8
    assert (4, 8, 8) in extents
