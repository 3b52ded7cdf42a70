"""Pairwise choices: the panel and its checks, chooser reliability, the human ceiling, and
training from comparison files alone or with ratings (issue 14, the training half)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dreamrate.aesthetic.predictor import load_predictor
from dreamrate.aesthetic.synthetic import make_world
from dreamrate.ratings.choices import ChoicePanel, chooser_reliability, human_ceiling
from tests.test_cli import _one_error_line, run_cli


def test_the_panel_refuses_unknown_winners_and_self_comparisons() -> None:
    with pytest.raises(ValueError, match="winner must be 'a', 'b' or 'tie', not 'left'"):
        ChoicePanel.from_columns([1], [2], ["r"], ["left"])
    with pytest.raises(ValueError, match="1 row\\(s\\) compare an image with itself"):
        ChoicePanel.from_columns([1, 3], [2, 3], ["r", "r"], ["a", "b"])
    panel = ChoicePanel.from_columns([1, 2, 3], [2, 1, 4], ["r", "s", "t"], ["a", "b", "tie"])
    assert panel.outcome.tolist() == [1.0, -1.0, 0.0]


def test_the_human_ceiling_is_agreement_with_the_others_on_the_same_pair() -> None:
    # Pair (1, 2): three members choose 1, one of them shown it on the right.
    # Pair (3, 4): 3, 3, then 4: the last member disagrees with the two others; each of the
    # first two faces a 1-1 split among the others and is not counted. Pair (5, 6): once.
    panel = ChoicePanel.from_columns(
        [1, 2, 1, 3, 3, 4, 5],
        [2, 1, 2, 4, 4, 3, 6],
        ["p", "q", "r", "p", "q", "r", "p"],
        ["a", "b", "a", "a", "a", "a", "a"],
    )
    ceiling, judged = human_ceiling(panel)
    assert judged == 4 and ceiling == pytest.approx(3 / 4)
    assert np.isnan(human_ceiling(ChoicePanel.from_columns([1], [2], ["p"], ["a"]))[0])


def test_choosers_who_always_take_one_side_or_flip_coins_are_flagged() -> None:
    world = make_world(2000, dim=32, n_raters=60, spam_share=0.1, seed=3)
    rng = np.random.default_rng(3)
    a, b, who, winner = world.random_choices(30_000, rng)
    panel = ChoicePanel.from_columns(a, b, [f"r{r}" for r in who], winner)
    # The truth order as the "fitted" one: a chooser's agreement with it is their skill.
    effects = chooser_reliability(panel, world.truth[a] - world.truth[b])
    flagged = {int(r[1:]) for r in effects.spam}
    spammers = set(np.flatnonzero(world.spammer).tolist())
    assert spammers <= flagged and len(flagged - spammers) <= 1
    constant = np.flatnonzero(world.spammer == 1)
    assert all("always the same side" in effects.spam[f"r{j}"] for j in constant)
    assert effects.weights_of(np.array([f"r{j}" for j in constant])).max() == 0.05


def test_an_honest_member_agrees_with_the_truth_on_about_70_percent_of_prompt_pairs() -> None:
    world = make_world(4000, dim=32, n_raters=100, spam_share=0.0, seed=5)
    a, b, _, winner = world.random_choices(40_000, np.random.default_rng(5), within_prompt=1.0)
    decisive = winner != "tie"
    agree = np.where(winner[decisive] == "a", 1, -1) == np.sign(
        world.truth[a[decisive]] - world.truth[b[decisive]]
    )
    assert 0.65 < agree.mean() < 0.75


def _panel_files(tmp_path: Path, *, choices: int, ratings: float = 1.0) -> Path:
    out = tmp_path / "panel"
    made = run_cli(
        "synthetic",
        "panel",
        "--out",
        str(out),
        "--images",
        "600",
        "--raters",
        "40",
        "--dim",
        "32",
        "--ratings-per-image",
        str(ratings),
        "--choices",
        str(choices),
    )
    assert made.returncode == 0, made.stderr
    return out


@pytest.fixture
def env(tmp_path: Path, tiny_models: tuple[Path, Path]) -> dict[str, str]:
    return {
        "DREAMRATE_DATA_DIR": str(tmp_path / "data"),
        "DREAMRATE_EMBEDDING_MODEL": str(tiny_models[1]),
    }


def test_train_on_choices_alone_and_with_ratings_from_files(
    tmp_path: Path, env: dict[str, str]
) -> None:
    panel = _panel_files(tmp_path, choices=3000)
    comparisons = pq.read_table(panel / "comparisons.parquet")
    assert comparisons.column_names[:4] == ["image_a", "image_b", "rater_id", "winner"]
    truth = pq.read_table(panel / "truth.parquet").column("truth").to_numpy()
    runs = {
        "bradley-terry": ["--comparisons", str(panel / "comparisons.parquet")],
        "joint": [
            "--comparisons",
            str(panel / "comparisons.parquet"),
            "--ratings",
            str(panel / "ratings.parquet"),
        ],
    }
    for kind, files in runs.items():
        out = tmp_path / kind
        trained = run_cli(
            "train",
            *files,
            "--embeddings",
            str(panel / "embeddings.parquet"),
            "--out",
            str(out),
            env=env,
        )
        assert trained.returncode == 0, trained.stderr
        assert "held-out" in trained.stdout and "human ceiling" in trained.stdout
        meta = json.loads((out / "predictor.json").read_text())
        assert meta["training"]["model"] == kind
        assert meta["training"]["choices"] == 3000
        held_out = meta["metrics"]["dreamrate"]["choice_accuracy"]
        ceiling = meta["metrics"]["human ceiling"]["choice_accuracy"]
        assert held_out > 0.55 and 0.55 < ceiling < 0.85
        # The format is the one scoring reads: it ranks the hidden truth.
        predictor = load_predictor(out)
        x = np.stack(
            pq.read_table(panel / "embeddings.parquet")
            .column("embedding")
            .to_numpy(zero_copy_only=False)
        )
        from scipy.stats import spearmanr

        assert spearmanr(predictor.predict(x), truth).statistic > 0.3
        report = (out / "report.html").read_text()
        assert "held-out choices" in report
        # The card and the report: intervals, the community's ceiling, the sources and
        # their weights.
        card = (out / "PREDICTOR.md").read_text()
        ours = meta["metrics"]["dreamrate"]
        low, high = ours["choice_accuracy_low"], ours["choice_accuracy_high"]
        assert low <= held_out <= high
        assert f"{held_out:.3f} [{low:.3f}, {high:.3f}]" in card
        assert "human ceiling on choices is" in card
        sources = meta["training"]["sources"]
        if kind == "joint":
            assert set(sources) == {"ratings", "choices"}
            assert sources["ratings"] + sources["choices"] == pytest.approx(1.0)
            assert ours["spearman_low"] <= ours["spearman"] <= ours["spearman_high"]
            assert ours["pairwise_low"] <= ours["pairwise"] <= ours["pairwise_high"]
            assert "held-out ratings and choices together" in card
            t = meta["training"]
            assert (
                f"| ratings | {t['ratings']} ratings by {t['raters']} raters | "
                f"{sources['ratings']:.2f} |"
            ) in card
            assert (
                f"| choices | {t['choices']} choices by {t['choosers']} members | "
                f"{sources['choices']:.2f} |"
            ) in card
            assert "learnt from ratings" in trained.stdout
        else:
            assert sources == {"choices": 1.0}
        assert "Sources it learnt from" in report and "<small>[" in report


def _write(path: Path, **columns: list[object]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_bad_comparison_files_are_one_line_and_write_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    panel = _panel_files(tmp_path, choices=0)
    embeddings = str(panel / "embeddings.parquet")
    good = {"image_a": [1, 2], "image_b": [3, 4], "rater_id": ["r", "s"], "winner": ["a", "b"]}
    cases = [
        ({**good, "image_b": [3, 99_999]}, "1 image(s) have no embedding", "99999"),
        ({**good, "image_b": [3, 2]}, "compare an image with itself", "image 2"),
        ({**good, "winner": ["a", "left"]}, "winner must be 'a', 'b' or 'tie', not 'left'"),
        ({k: v for k, v in good.items() if k != "winner"}, "lacks column(s) winner"),
        ({**good, "winner": ["tie", "tie"]}, "every choice is a tie"),
        (good, "need at least 50 decisive choices", "have 2"),
    ]
    weights = run_cli(
        "train",
        "--comparisons",
        str(_write(tmp_path / "weights.parquet", **good)),
        "--embeddings",
        embeddings,
        "--ratings-weight",
        "1.5",
        "--out",
        str(tmp_path / "w"),
        env=env,
    )
    _one_error_line(weights, "--ratings-weight", "less than or equal to 1", "1.5")
    assert not (tmp_path / "w").exists()
    for k, (columns, *needles) in enumerate(cases):
        file = _write(tmp_path / f"bad{k}.parquet", **columns)
        out = tmp_path / f"out{k}"
        result = run_cli(
            "train",
            "--comparisons",
            str(file),
            "--embeddings",
            embeddings,
            "--out",
            str(out),
            env=env,
        )
        _one_error_line(result, *needles)
        assert not out.exists()
