"""Specifications of the distribution metrics on hand-computable cases and their known properties."""

from __future__ import annotations

import numpy as np
import pytest

from CircleOfWillisGANLib.errors import InputError
from CircleOfWillisGANLib.evaluation import density_coverage, f_beta_scores, frechet_distance, prd, prd_auc, precision_recall
from CircleOfWillisGANLib.evaluation.prd import prd_curve


def gaussian(n: int, dim: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)) + shift


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = gaussian(50, 8)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_in_one_dimension_is_mean_and_sd_difference_squared():
    a = np.array([[0.0], [2.0]])           # mean 1, sample variance 2
    b = np.array([[3.0], [5.0], [7.0]])    # mean 5, sample variance 4
    expected = (1 - 5) ** 2 + (np.sqrt(2) - np.sqrt(4)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_grows_with_a_shift_of_the_mean():
    x = gaussian(200, 4)
    shifted = x + np.array([3.0, 0, 0, 0])
    assert frechet_distance(x, shifted) == pytest.approx(9.0, rel=1e-9)


def test_frechet_distance_is_finite_with_fewer_samples_than_features():
    assert np.isfinite(frechet_distance(gaussian(5, 64, seed=1), gaussian(6, 64, seed=2)))


def test_frechet_distance_refuses_feature_sets_of_different_width():
    with pytest.raises(InputError, match="differ in width"):
        frechet_distance(gaussian(5, 3), gaussian(5, 4))


def test_prd_curve_of_identical_distributions_reaches_one_and_auc_is_one():
    p = np.array([0.2, 0.3, 0.5])
    precision, recall = prd_curve(p, p, 1001)
    assert precision.max() == pytest.approx(1.0) and recall.max() == pytest.approx(1.0)
    assert prd_auc(precision, recall) == pytest.approx(1.0, abs=2e-3)


def test_prd_auc_joins_neighbouring_points_of_the_curve_where_recall_ties():
    u = np.full(10, 0.1)
    precision, recall = prd_curve(u, u, 1001)  # hundreds of points at recall 1: the curve's vertical edge
    assert np.sum(recall == recall.max()) > 100
    assert prd_auc(precision, recall) == pytest.approx(1.0, abs=1e-9)
    shuffled = np.random.default_rng(0).permutation(len(recall))
    assert prd_auc(precision[shuffled], recall[shuffled]) == pytest.approx(1.0, abs=1e-9)


def test_prd_curve_of_disjoint_distributions_is_zero():
    precision, recall = prd_curve(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 101)
    assert precision.max() == 0.0 and recall.max() == 0.0


def test_prd_curve_by_hand_for_half_overlapping_distributions():
    # eval puts mass 1 on bin 0; ref splits 0.5/0.5: at slope 1 precision = min(0.5, 1) + min(0.5, 0) = 0.5.
    # All generated mass lies where real data is (max precision 1); it covers half of it (max recall 0.5).
    precision, recall = prd_curve(np.array([1.0, 0.0]), np.array([0.5, 0.5]), 3)
    assert precision[1] == pytest.approx(0.5) and recall[1] == pytest.approx(0.5)
    assert max(precision) == pytest.approx(1.0) and max(recall) == pytest.approx(0.5)


def test_prd_of_identical_feature_sets_is_near_one():
    x = gaussian(60, 5)
    precision, recall = prd(x, x.copy(), num_clusters=10, num_runs=3, seed=0)
    assert prd_auc(precision, recall) > 0.99
    f8, f1_8 = f_beta_scores(precision, recall)
    assert f8 > 0.99 and f1_8 > 0.99


def test_prd_of_disjoint_feature_sets_is_near_zero():
    precision, recall = prd(gaussian(60, 5, shift=50.0), gaussian(60, 5), num_clusters=10, num_runs=3)
    assert prd_auc(precision, recall) < 0.01


def test_prd_is_deterministic_for_a_seed():
    a, b = gaussian(40, 3, seed=1), gaussian(40, 3, shift=0.5, seed=2)
    first = prd(a, b, num_clusters=5, num_runs=2, seed=7)
    second = prd(a, b, num_clusters=5, num_runs=2, seed=7)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_prd_refuses_sets_of_unequal_size():
    with pytest.raises(InputError, match="equal size"):
        prd(gaussian(30, 2), gaussian(40, 2), num_clusters=5)


def test_f_beta_of_a_precision_only_curve_reports_high_f1_8_and_low_f8():
    # a model that is precise but covers little: precision 1 and recall 0.1 at its best point
    f8, f1_8 = f_beta_scores(np.array([1.0, 0.0]), np.array([0.1, 0.0]))
    assert f8 == pytest.approx(65 * 0.1 / (64 + 0.1), rel=1e-6)
    assert f1_8 == pytest.approx((1 + 1 / 64) * 0.1 / (1 / 64 + 0.1), rel=1e-6)


def test_precision_recall_of_identical_sets_is_one():
    x = gaussian(30, 4)
    assert precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_of_disjoint_sets_is_zero():
    assert precision_recall(gaussian(30, 4), gaussian(30, 4, shift=100.0), k=3) == (0.0, 0.0)


def test_precision_recall_by_hand_on_a_line():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: 1, 1, 1, 1
    fake = np.array([[0.5], [10.0]])                 # 0.5 is inside a real ball, 10 is not; fake radius 9.5
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == 0.5
    assert recall == 1.0  # every real point lies within 9.5 of a fake point


def test_density_and_coverage_of_identical_sets_are_one():
    x = gaussian(40, 3)
    density, coverage = density_coverage(x, x.copy(), k=5)
    assert coverage == 1.0 and density == pytest.approx(1.0, abs=0.3)


def test_density_and_coverage_by_hand_on_a_line():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii 1, 1, 1, 1
    fake = np.array([[0.5], [0.6], [10.0]])          # 0.5 and 0.6 each inside the balls of 0 and 1
    density, coverage = density_coverage(real, fake, k=1)
    assert density == pytest.approx((2 + 2 + 0) / 3)
    assert coverage == pytest.approx(2 / 4)


def test_density_and_coverage_of_disjoint_sets_are_zero():
    assert density_coverage(gaussian(30, 2), gaussian(30, 2, shift=100.0), k=5) == (0.0, 0.0)


def test_knn_metrics_need_more_samples_than_k():
    with pytest.raises(InputError, match="at least 6"):
        density_coverage(gaussian(5, 2), gaussian(5, 2), k=5)


def test_the_verdict_compares_a_distance_with_the_real_baseline_even_when_the_baseline_is_zero():
    from CircleOfWillisGANLib.evaluation.report import verdict

    assert verdict(3.0, 2.0) == "1.5 times the real-vs-real baseline: close to the real-vs-real baseline"
    assert verdict(50.0, 2.0).endswith("far from the real data")
    assert verdict(0.0, 0.0) == "close to the real-vs-real baseline"
    assert verdict(1.0, 0.0) == "far from the real data"
    assert verdict(None, 1.0) is None


@pytest.mark.parametrize("call, message", [
    (lambda a, b: precision_recall(a, b, k=3.0), "k \\(the neighbour .*\\) must be a whole number"),
    (lambda a, b: density_coverage(a, b, k=0), "k \\(the neighbour .*\\) must be a whole number of at least 1"),
    (lambda a, b: prd(b, a, num_clusters=0), "num_clusters must be a whole number of at least 1"),
    (lambda a, b: prd(b, a, num_clusters=2, seed=-1), "seed -1 is out of range"),
    (lambda a, b: prd(b, a, num_clusters=2, num_runs=0), "num_runs must be a whole number of at least 1"),
    (lambda a, b: prd_auc(np.ones(5), np.ones(4)), "two 1D arrays of one length"),
])
def test_metric_settings_that_library_code_would_fail_on_are_named(call, message):
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=message):
        call(rng.normal(size=(12, 3)), rng.normal(size=(12, 3)))
