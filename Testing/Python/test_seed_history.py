"""The panel's seed history behaves like a browser's back and forward."""

from __future__ import annotations

from CircleOfWillisGANLib.seed_history import SeedHistory


def test_back_and_forward_walk_the_visited_seeds_and_stop_at_the_ends():
    history = SeedHistory()
    assert history.back() is None and history.forward() is None
    for seed in (3, 7, 11):
        history.visit(seed)
    assert history.back() == 7 and history.back() == 3 and history.back() is None
    assert history.forward() == 7 and history.forward() == 11 and history.forward() is None
    assert history.seeds == [3, 7, 11]


def test_visiting_after_going_back_drops_the_seeds_ahead_and_repeats_are_not_recorded():
    history = SeedHistory()
    for seed in (3, 7, 11):
        history.visit(seed)
    history.back()
    history.back()
    history.visit(3)
    assert history.seeds == [3, 7, 11] and history.can_go_forward
    history.visit(5)
    assert history.seeds == [3, 5] and not history.can_go_forward and history.can_go_back
