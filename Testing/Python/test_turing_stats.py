"""Statistics against scipy's binomtest and textbook kappa examples."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from CircleOfWillisGANLib.turing import stats

CASES = [(22, 50), (30, 50), (0, 10), (10, 10), (59, 100), (178, 300), (7, 13), (1, 1)]


@pytest.mark.parametrize("k,n", CASES)
def test_binomial_p_value_matches_scipy(k, n):
    assert stats.binom_test(k, n) == pytest.approx(binomtest(k, n).pvalue, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("k,n", CASES)
def test_clopper_pearson_interval_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = stats.clopper_pearson(k, n)
    assert low == pytest.approx(ci.low, abs=1e-10) and high == pytest.approx(ci.high, abs=1e-10)


def test_binomial_test_against_a_non_half_probability_matches_scipy():
    assert stats.binom_test(9, 20, 0.3) == pytest.approx(binomtest(9, 20, 0.3).pvalue, rel=1e-10)


def test_reference_paper_single_reader_44_percent_of_50_is_chance():
    assert stats.binom_test(22, 50) == pytest.approx(0.4798877, abs=1e-6)


def test_fleiss_kappa_of_the_classic_14_rater_example_is_0_210():
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert stats.fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_of_a_hand_computed_two_category_table():
    # 4 cases x 3 raters. P_i = 1, 1/3, 1/3, 1 -> P_bar = 2/3; shares 6/12, 6/12 -> P_e = 1/2; kappa = 1/3.
    assert stats.fleiss_kappa([[3, 0], [2, 1], [1, 2], [0, 3]]) == pytest.approx(1 / 3)


def test_cohen_kappa_of_the_textbook_50_item_example_is_0_4():
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)


def test_kappa_is_undefined_when_both_raters_always_give_the_same_call():
    assert stats.cohen_kappa(["fake"] * 5, ["fake"] * 5) is None


def test_fifty_readings_cannot_tell_36_to_64_percent_from_chance():
    assert stats.chance_band(50) == (0.36, 0.64)


@pytest.mark.parametrize("accuracy,published", [(0.75, 30), (0.70, 50), (0.65, 90), (0.60, 205)])
def test_readings_for_80_percent_power_are_where_power_stays_at_80_percent(accuracy, published):
    n = stats.readings_for_power(accuracy)
    assert stats.exact_power(accuracy, n - 1) < 0.8
    assert all(stats.exact_power(accuracy, m) >= 0.8 for m in range(n, 2 * n))
    assert published <= n <= 1.2 * published  # the usual figures are where power first touches 80%


def test_readings_to_significance_is_the_first_n_where_the_observed_accuracy_is_significant():
    n = stats.readings_to_significance(0.44)
    assert stats.binom_test(round(0.44 * n), n) < 0.05
    assert stats.binom_test(round(0.44 * (n - 10)), n - 10) >= 0.05


def test_sample_size_note_states_the_chance_band_and_the_readings_needed():
    note = stats.sample_size_note(22, 50)
    assert "36% to 64%" in note and "readings" in note
    assert "no number of readings" in stats.sample_size_note(25, 50)


def test_an_accuracy_near_but_not_at_50_percent_needs_more_readings_than_the_search_tries_it_is_not_at_chance():
    assert "is at chance" in stats.sample_size_note(120, 240)
    near = stats.sample_size_note(251, 500)  # 50.2%: significant only beyond the 100,000 readings searched
    assert "at chance" not in near and "no number of readings" not in near
    assert near.endswith("An accuracy of 50.2% would need more than 100,000 readings to be significant; to detect a "
                         "reader whose true accuracy is 50.2% with 80% power needs more than 100,000 readings.")
    nearer_power = stats.sample_size_note(121, 240)  # 50.4%: significant from 55,559, but 80% power lies beyond
    assert "would be significant from about 55559 readings" in nearer_power
    assert nearer_power.endswith("with 80% power needs more than 100,000 readings.")


def test_p_values_too_small_for_four_decimals_are_shown_as_below_0_0001_not_as_zero():
    assert [stats.format_p_value(p) for p in (0.04321, 0.0001, 3e-7)] == ["0.0432", "0.0001", "< 0.0001"]
    assert [stats.p_value_text(p) for p in (0.5, 3e-7)] == ["p = 0.5000", "p < 0.0001"]


def test_fisher_exact_test_matches_scipy_including_empty_rows_and_ties():
    import numpy as np
    from scipy.stats import fisher_exact as scipy_fisher

    from CircleOfWillisGANLib.turing.stats import fisher_exact

    rng = np.random.default_rng(0)
    tables = [tuple(int(x) for x in rng.integers(0, 30, 4)) for _ in range(300)]
    tables += [(0, 24, 0, 36), (36, 0, 24, 0), (5, 5, 5, 5), (0, 0, 0, 0), (12, 0, 0, 12), (1, 0, 0, 0)]
    for a, b, c, d in tables:
        assert fisher_exact(a, b, c, d) == pytest.approx(scipy_fisher([[a, b], [c, d]])[1], rel=1e-9, abs=1e-12)
