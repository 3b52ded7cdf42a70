"""The arena's statistics on hand-made tables."""

from __future__ import annotations

import math

import pytest

from dreamrate.ratings.arena_stats import Judgement, pair_results, wilson_interval


def test_win_rates_split_ties_and_read_either_side() -> None:
    # "new" beats "old" 6 times (4 shown left, 2 shown right), loses twice, 2 ties.
    table = (
        [Judgement("new", "old", "a")] * 4
        + [Judgement("old", "new", "b")] * 2
        + [Judgement("new", "old", "b"), Judgement("old", "new", "a")]
        + [Judgement("new", "old", "tie"), Judgement("old", "new", "tie")]
        + [Judgement("old", "old", "a")]  # a model against itself: no information
    )
    (result,) = pair_results(table)
    assert (result.first, result.second) == ("new", "old")
    assert (result.judgements, result.wins, result.losses, result.ties) == (10, 6, 2, 2)
    assert result.win_rate == pytest.approx(0.7)
    # Wilson's interval for 7 of 10, worked by hand: centre 0.6445, half-width 0.2477.
    low, high = result.interval
    assert low == pytest.approx(0.3968, abs=5e-4) and high == pytest.approx(0.8922, abs=5e-4)


def test_wilson_interval_at_the_edges() -> None:
    assert wilson_interval(0, 5) == (0.0, pytest.approx(3.8415 / 8.8415, abs=1e-4))
    low, high = wilson_interval(5, 5)
    assert high == 1.0 and low == pytest.approx(5 / 8.8415, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    # Wider with fewer judgements at the same rate.
    assert wilson_interval(7, 10)[0] < wilson_interval(70, 100)[0]


def test_arena_report_refuses_a_model_against_itself(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_cli import _one_error_line, run_cli

    env = {"DREAMRATE_DATA_DIR": str(tmp_path / "data")}
    _one_error_line(run_cli("arena", "report", "--models", "a,a", env=env), "two different models")
    _one_error_line(run_cli("arena", "report", "--models", "a", env=env), "--models", "A,B")
    assert not (tmp_path / "data").exists()  # refused before the database is opened
    empty = run_cli("arena", "report", env=env)
    assert empty.returncode == 0 and "no arena judgements yet" in empty.stdout
