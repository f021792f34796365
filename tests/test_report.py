"""The leaderboard from a hand-made runs directory, the published-numbers page and figures.

The fixture tree (tests/fixtures/runs, written by tests/fixtures/runs_factory.py) holds
realistic result files with every evaluation key; the report built from it must match
tests/fixtures/expected/fixture-digits.md byte for byte. After an intended change of the
report, regenerate the expected file with ``LPC_BENCH_UPDATE_EXPECTED=1 pytest
tests/test_report.py`` and review the diff.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.reporting import figures, format as fmt, report, summary as summary_module
from bench.reporting.published.page import render_published
from bench.reporting.stats import Stat
from bench.reporting.summary import summarise_suite

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = FIXTURES / "expected" / "fixture-digits.md"

_spec = importlib.util.spec_from_file_location("lpc_runs_factory", FIXTURES / "runs_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

# A fixed suite analysis in the shape bench.metrics.correlation.analyse_suite returns, so
# the expected Markdown does not depend on that module's bootstrap.
FIXED_ANALYSIS = {
    "status": "ok", "runs_used": "every done run (all learning rates)",
    "bootstrap": {"resamples": 2000, "seed": 0, "interval": "percentile, 95 %"},
    "train": {"status": "ok", "n_runs": 10, "n_missing": 0,
              "R_vs_rho": {"n": 10, "pearson": {"r": 0.9981, "p": 2.6e-11, "ci95": [0.9968, 0.9995]},
                           "spearman": {"r": 1.0, "p": 6.6e-64, "ci95": [1.0, 1.0]}},
              "logR_vs_logrho": {"n": 10, "pearson": {"r": 0.9962, "p": 7.5e-10, "ci95": [0.9911, 0.9989]},
                                 "spearman": {"r": 1.0, "p": 6.6e-64, "ci95": [1.0, 1.0]}}},
    "test": {"status": "not available", "reason": "no done run has R_test and rho"},
}


@pytest.fixture
def fixture_runs(tmp_path):
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    return tmp_path / "runs"


def test_fixture_tree_is_what_the_factory_writes(tmp_path):
    factory.write_fixture_tree(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(FIXTURES / "runs") for p in (FIXTURES / "runs").rglob("*") if p.is_file())
    assert made == committed
    for rel in made:
        assert (tmp_path / rel).read_text() == (FIXTURES / "runs" / rel).read_text(), rel


def test_report_matches_expected_markdown(fixture_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(summary_module, "suite_analysis", lambda records: (FIXED_ANALYSIS, None))
    out = tmp_path / "leaderboards"
    path = report.build_report(fixture_runs, None, out)
    text = path.read_text()
    if os.environ.get("LPC_BENCH_UPDATE_EXPECTED"):
        EXPECTED.parent.mkdir(parents=True, exist_ok=True)
        EXPECTED.write_text(text)
    assert text == EXPECTED.read_text()
    # every linked figure exists and is a PNG; every linked run file exists
    for link in re.findall(r"\]\(([^)]+)\)", text):
        target = (out / link).resolve()
        assert target.is_file(), link
        if link.endswith(".png"):
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "fixture-digits-figures" / "r-vs-rho.png").is_file()
    assert (out / "fixture-digits-figures" / "curves-LPC.png").is_file()
    assert (out / "fixture-digits-figures" / "z-hist.png").is_file()   # from result.json's figure_data alone


def test_report_is_deterministic(fixture_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(summary_module, "suite_analysis", lambda records: (FIXED_ANALYSIS, None))
    a = report.build_report(fixture_runs, None, tmp_path / "a", figures=False).read_text()
    b = report.build_report(fixture_runs, None, tmp_path / "b", figures=False).read_text()
    assert a == b


def test_failed_and_unfinished_runs_are_listed_not_averaged(fixture_runs, tmp_path):
    summary = summarise_suite(fixture_runs, None)
    linpen = summary.plugin("LinPen")
    assert [r.seed for r in linpen.runs] == [0]            # seed 1 failed: n = 1
    assert linpen.stats["test_acc"].n == 1 and linpen.stats["test_acc"].std is None
    nopen = summary.plugin("NoPen")
    assert [(r.seed, r.lr) for r in nopen.runs] == [(0, 0.001), (1, 0.001)]   # (1, 0.002) unfinished
    assert sorted((r.plugin, r.status) for r in summary.not_counted) == [("LinPen", "failed"), ("NoPen", "incomplete")]
    text = report.build_report(fixture_runs, None, tmp_path / "lb", figures=False).read_text()
    section = text.split("## Runs not counted")[1]
    assert "LinPen/seed1-lr0.001 | failed | epoch 3: non-finite loss" in section
    assert "NoPen/seed1-lr0.002 | incomplete |" in section


def test_lr_is_selected_on_validation_accuracy(fixture_runs):
    summary = summarise_suite(fixture_runs, None)
    lpc = summary.plugin("LPC")
    assert [(r.seed, r.lr) for r in lpc.runs] == [(0, 0.001), (1, 0.002)]


def test_missing_evaluators_show_dashes_and_skip_claims(tmp_path):
    suite = factory.suite_config(name="bare", plugins=("LPC", "NoPen"), seeds=(0,), lrs=(0.001,))
    for plugin in ("LPC", "NoPen"):
        path = factory.write_run(tmp_path, suite, plugin, 0, 0.001)
        result = json.loads((path / "result.json").read_text())
        result["evaluations"] = {"geometry": {"train": {"R_mean": None, "R_mean_reason": "class 3 has one sample"}},
                                 "deepfool": {"rho_mean": "nan"}}
        (path / "result.json").write_text(json.dumps(result))
    text = report.build_report(tmp_path, None, tmp_path / "lb", figures=False).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1 | LPC"))
    assert row.endswith("| 98.05 | – |")                      # the headline: DeepFool ρ not measured
    geometry = text.split("### Latent geometry", 1)[1]
    row = next(line for line in geometry.splitlines() if line.startswith("| 1 | LPC"))
    assert row.count("–") >= 5
    note = figures.scatter_r_rho(summarise_suite(tmp_path, None), tmp_path / "figs", "figs")
    assert "R vs ρ figure skipped" in note[0]
    assert "**skipped**: LPC-family R" in text
    assert "No DeepFool results" in text
    assert "No binarity results" in text


def test_one_pearson_feeds_the_table_and_the_claim(fixture_runs, tmp_path):
    """The correlation table and the shape claim come from the same analysis
    (bench.metrics.correlation), so they print the same r."""
    summary = summarise_suite(fixture_runs, None)
    table_r = summary.analysis["train"]["R_vs_rho"]["pearson"]["r"]
    assert summary.correlations()["rho"].r == table_r
    text = report.build_report(fixture_runs, None, tmp_path / "lb", figures=False).read_text()
    assert "| train (headline) | R vs ρ | 10 |" in text
    assert f"r = {table_r:.3f} over 10 runs" in text and f"| {table_r:.3f} [" in text


def test_report_cli_and_bad_input(fixture_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "make_figures", lambda summary, out_dir: {})
    assert main(["report", "--runs", str(fixture_runs), "--leaderboards", str(tmp_path / "lb")]) == 0
    assert (tmp_path / "lb" / "fixture-digits.md").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", "--runs", str(empty), "--leaderboards", str(tmp_path / "lb2")]) == 2
    assert "no runs" in capsys.readouterr().err


def test_mixed_suites_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(report, "make_figures", lambda summary, out_dir: {})
    for name in ("one", "two"):
        factory.write_run(tmp_path, factory.suite_config(name=name, seeds=(0,), lrs=(0.001,)), "LPC", 0, 0.001)
    assert main(["report", "--runs", str(tmp_path), "--leaderboards", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err
    assert "mixes runs of several suites" in err and err.count("\n") == 1
    assert main(["report", "--runs", str(tmp_path), "--suite", "two", "--leaderboards", str(tmp_path / "lb")]) == 0


def test_mixed_configurations_are_flagged(tmp_path):
    factory.write_run(tmp_path, factory.suite_config(seeds=(0,), lrs=(0.001,)), "LPC", 0, 0.001)
    factory.write_run(tmp_path, factory.suite_config(seeds=(0,), lrs=(0.001,), epochs=5), "NoPen", 0, 0.001)
    text = report.build_report(tmp_path, None, tmp_path / "lb", figures=False).read_text()
    assert "different suite configurations (recipe.epochs: 12 vs 5)" in text


def test_number_formats():
    assert fmt.fmt_sig(298.61) == "299"
    assert fmt.fmt_sig(0.586) == "0.586"
    assert fmt.fmt_sig(1.1064e-13) == "1.11e-13"
    assert fmt.fmt_sig(-4.123) == "-4.12"
    assert fmt.fmt_stat(Stat(0.586, 0.175, 5)) == "0.586 ± 0.175"
    assert fmt.fmt_stat(Stat(0.9498, 0.0012, 5), "pct") == "94.98 ± 0.12"
    assert fmt.fmt_stat(Stat(1.5e-12, 3e-13, 2)) == "1.50e-12 ± 3.0e-13"
    assert fmt.fmt_stat(Stat(2.0, None, 1)) == "2.00"
    assert fmt.fmt_stat(Stat(2.0, 0.1, 2), n_expected=3) == "2.00 ± 0.10 (n=2)"
    assert fmt.fmt_stat(Stat(0.0, 0.0, 3), "count") == "0 ± 0.0"
    assert fmt.fmt_stat(Stat(4 / 3, 0.5773502, 3), "count") == "1.3 ± 0.6"
    assert fmt.fmt_stat(Stat(7.0, None, 1), "count") == "7"
    assert fmt.fmt_stat(None) == "–"
    assert fmt.number("nan") is None and fmt.number(True) is None and fmt.number(3) == 3.0


def test_published_page(tmp_path, capsys):
    assert main(["published", "--leaderboards", str(tmp_path)]) == 0
    text = (tmp_path / "published.md").read_text()
    for heading in ("## CIFAR-10", "## CIFAR-100", "### Table I", "### Table II", "### Table IV"):
        assert heading in text
    assert "| LPC | 298.61 ± 58.09 | 1.1064e-13 ± 2.7650e-14 | 0.012 ± 0.004 | -4.123 ± 0.200 |" in text
    # the paper's own numbers satisfy every shape claim the check applies
    assert text.count("**holds**") == 10 and "does not hold" not in text and "skipped" not in text


def test_committed_published_page_is_current(tmp_path):
    committed = Path(__file__).resolve().parent.parent / "leaderboards" / "published.md"
    if not committed.exists():
        pytest.skip("leaderboards/published.md not written yet")
    assert render_published(tmp_path).read_text() == committed.read_text()


def test_published_data_matches_the_paper_csvs():
    from bench.reporting.published import load_published, published_pearson
    order, values = load_published("cifar10")
    assert order[0] == "LPC" and order[-1] == "NoPen" and len(order) == 11
    assert values["LPC"]["test_acc"].mean == pytest.approx(0.9498)
    assert values["LPC"]["rho"].std == pytest.approx(0.175)
    assert values["LinPen"]["gmm_score_min"].std is None
    assert published_pearson("cifar100") == pytest.approx(0.985)
    paper = Path("/work/shared/paper/published.csv")
    if paper.exists():
        package = Path(report.__file__).parent / "published" / "published.csv"
        assert package.read_text() == paper.read_text()


def test_the_setup_states_the_wall_time_read_from_the_run_files(fixture_runs, tmp_path):
    """Span = last provenance 'finished' − first 'started'; sum = the results' wall_s, recomputed here."""
    from datetime import datetime
    provs = [json.loads(p.read_text()) for p in fixture_runs.rglob("provenance.json")]
    results = [json.loads(p.read_text()) for p in fixture_runs.rglob("result.json")]
    span = (max(datetime.fromisoformat(p["finished"]) for p in provs if "finished" in p)
            - min(datetime.fromisoformat(p["started"]) for p in provs)).total_seconds()
    own = [r["wall_s"] for r in results if "wall_s" in r]
    text = report.build_report(fixture_runs, None, tmp_path / "lb").read_text()
    line = next(line for line in text.splitlines() if line.startswith("- **wall time**"))
    assert f"{int(span) // 60} min {int(span) % 60:02d} s from the first run's start" in line
    total = round(sum(own))
    assert f"the {len(own)} runs' own wall times sum to {total // 60} min {total % 60:02d} s" in line


@pytest.mark.parametrize("suite", ["digits", "digits-paper", "cifar10-small"])
def test_a_committed_leaderboard_is_what_its_committed_runs_report(suite, tmp_path):
    """Every committed page is rebuilt from the run folders committed beside it (checkpoints are
    not needed): a number edited by hand, or a report change not re-run on the pages, fails."""
    committed = Path(__file__).resolve().parent.parent / "leaderboards"
    if not (committed / f"{suite}.md").exists() or not (committed / "runs" / suite).is_dir():
        pytest.skip(f"no committed {suite} leaderboard")
    shutil.copytree(committed / "runs" / suite, tmp_path / "leaderboards" / "runs" / suite,
                    ignore=shutil.ignore_patterns("checkpoint.pt", "*.lock"))
    page = report.build_report(tmp_path / "leaderboards" / "runs", suite, tmp_path / "leaderboards")
    assert page.read_text() == (committed / f"{suite}.md").read_text()
    assert (tmp_path / "leaderboards" / f"{suite}.csv").read_text() == (committed / f"{suite}.csv").read_text()
