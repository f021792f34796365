"""The robustness headline of a leaderboard, from fixture results that hold the best-known
attack, the reliability checks and a trimmed AutoAttack (tests/fixtures/runs_factory.py,
``best_known=True``): headline columns, the DeepFool overstatement, reliability, budget
deviations, the claims and correlations on both ρ, the per-input CDF figure, the CSV and
RobustBench-shaped JSON beside the page, and ``bench check`` on the new metrics."""
from __future__ import annotations

import importlib.util
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.evaluation.columns import RANK_HEADLINE, Column
from bench.evaluation.hook import EVALUATORS, register_evaluator
from bench.reporting import report
from bench.suites.imports import load_builtin_evaluators

FIXTURES = Path(__file__).resolve().parent / "fixtures"
_spec = importlib.util.spec_from_file_location("lpc_runs_factory", FIXTURES / "runs_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

PLUGINS = ("LPC", "LPC-NARROW", "LinPen", "NoPen")
SEEDS = (0, 1)
OVERSTATED = {"LPC": 0.5, "LPC-NARROW": 0.4, "LinPen": 0.15, "NoPen": 0.1}
UNRELIABLE_REASON = "clean accuracy below 1 % after the attack with gradients masked"
# the columns the best-known evaluator declares under the standard keys (bench.evaluation.columns)
BEST_KNOWN_COLUMNS = (
    Column("rho_best", "ρ best-known", ("rho_best_mean",), atol=1e-4, rank=RANK_HEADLINE),
    Column("rho_best_median", "ρ best-known (median)", ("rho_best_median",), atol=1e-4, rank=RANK_HEADLINE),
    Column("ra_best:{0}:{1}", "RA best-known {0} ε={1} (%)", ("robust_accuracy", "*", "*"), fmt="pct", atol=0.01,
           rtol=0.0, rank=RANK_HEADLINE + 1),
)


@dataclass(frozen=True)
class _NoOptions:
    pass


@pytest.fixture(scope="module", autouse=True)
def best_known_evaluator():
    """The best-known evaluator's columns; a stand-in where the attacks package has none yet."""
    load_builtin_evaluators()
    if "best_known" in EVALUATORS:
        yield
        return
    register_evaluator("best_known", options=_NoOptions, kind="attack", columns=BEST_KNOWN_COLUMNS)(
        lambda ctx, opts: {})
    yield
    EVALUATORS.remove("best_known")


def make_tree(root: Path, change=None, seeds=SEEDS) -> Path:
    suite = factory.suite_config(name="robust", plugins=PLUGINS, seeds=seeds, lrs=(0.001,))
    suite["evaluation"]["evaluators"] += ["best_known", "reliability"]
    for plugin in PLUGINS:
        for seed in seeds:
            values = factory.run_values(plugin, seed, 0.001)
            values.update(overstated=OVERSTATED[plugin], unreliable=plugin == "LinPen")
            if change:
                change(plugin, seed, values)
            factory.write_run(root, suite, plugin, seed, 0.001, values=values, best_known=True)
    return root


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("robust") / "runs")
    out = root.parent / "lb"
    page = report.build_report(root, None, out)
    return root, out, page.read_text()


def results(root: Path, plugin: str) -> list[dict]:
    return [json.loads((root / "robust" / plugin / f"seed{s}-lr0.001" / "result.json").read_text()) for s in SEEDS]


def table(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    rows = []
    for line in lines:
        if not rows or len(line.split(" | ")) == len(rows[0]):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
        else:
            break
    return rows


def test_headline_columns_sit_after_accuracy_and_before_the_other_attacks(board):
    _, _, text = board
    header = table(text, "## Leaderboard")[0]
    assert header[:7] == ["#", "plugin", "latent", "n", "test acc (%)", "ρ best-known", "ρ best-known (median)"]
    best_ra = [h for h in header if h.startswith("RA best-known")]
    assert best_ra == ["RA best-known L2 ε=36/255 (%)", "RA best-known L2 ε=0.5 (%)", "RA best-known L2 ε=1 (%)",
                       "RA best-known L∞ ε=2/255 (%)", "RA best-known L∞ ε=8/255 (%)"]
    position = header.index
    assert position(best_ra[-1]) < position("ρ DeepFool") < position("DeepFool ρ overstated by (%)") \
        < position("reliability") < position("RA AutoAttack L∞ ε=8/255 (%)") < position("RA L2 ε=36/255 (%)") \
        < position("R")
    assert "## Leaderboard (sorted by best-known ρ" in text


def test_rows_rank_by_best_known_rho_and_cells_are_the_run_means(board):
    root, _, text = board
    rows = table(text, "## Leaderboard")
    header, body = rows[0], rows[1:]
    mean_best = {p: statistics.fmean(r["evaluations"]["best_known"]["rho_best_mean"] for r in results(root, p))
                 for p in PLUGINS}
    assert [row[1].split(" ")[0] for row in body] == sorted(PLUGINS, key=lambda p: -mean_best[p])
    for row in body:
        plugin = row[1].split(" ")[0]
        runs = results(root, plugin)
        share = []
        for r in runs:   # the same inputs on both sides: those DeepFool and the best-known attack flipped
            per = r["evaluations"]["best_known"]["per_input"]
            df, best = [], []
            for i in range(len(per["status"])):
                if per["status"][i] == "flipped" and per["norm_deepfool"][i] is not None:
                    df.append(per["norm_deepfool"][i] / per["x_norm"][i])
                    best.append(per["norm_best"][i] / per["x_norm"][i])
            share.append(1 - statistics.fmean(best) / statistics.fmean(df))
        cell = row[header.index("DeepFool ρ overstated by (%)")]
        assert cell.startswith(f"{statistics.fmean(share) * 100:.2f} ± {statistics.stdev(share) * 100:.2f}")
        aa = [r["evaluations"]["attacks"]["per_attack"]["autoattack-linf"]["robust_accuracy"]["0.0313725"]
              for r in runs]
        assert row[header.index("RA AutoAttack L∞ ε=8/255 (%)")].startswith(f"{statistics.fmean(aa) * 100:.2f} ± ")
        reliability = row[header.index("reliability")]
        if plugin == "LinPen":
            assert reliability == f"potentially unreliable (2/2): {UNRELIABLE_REASON} 2/2"
        else:
            assert reliability == "ok (2/2 checked)"


def test_budget_deviations_are_in_the_header(board):
    _, _, text = board
    setup = text.split("## Leaderboard")[0]
    assert "- **attack budget deviations**" in setup
    assert "  - autoattack-linf: apgd-ce and apgd-t only, 1 restart (the standard version: 4 attacks, " \
           "5 restarts) (8 runs)" in setup


def test_claims_and_correlations_on_both_rho(board):
    root, _, text = board
    claims = text.split("## The paper's shape claims on this suite")[1].split("## Figures")[0]
    assert "LPC's DeepFool ρ ≥ 10× NoPen's" in claims and "LPC's best-known ρ ≥ 10× NoPen's" in claims
    assert "Pearson r(R, ρ) across runs ≥ 0.9" in claims and "Pearson r(R, best-known ρ) across runs ≥ 0.9" in claims
    lpc = statistics.fmean(r["evaluations"]["best_known"]["rho_best_mean"] for r in results(root, "LPC"))
    nopen = statistics.fmean(r["evaluations"]["best_known"]["rho_best_mean"] for r in results(root, "NoPen"))
    from bench.reporting.format import fmt_sig
    assert f"ρ(LPC) / ρ(NoPen) = {fmt_sig(lpc)} / {fmt_sig(nopen)}" in claims
    corr = text.split("## Class separation vs robustness")[1].split("## DeepFool outcomes")[0]
    assert "| train | R vs best-known ρ | 8 |" in corr


def test_the_cdf_figure_is_drawn_from_per_input_data(board):
    _, out, text = board
    figure = out / "robust-figures" / "norm-cdf.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[norm-cdf.png](robust-figures/norm-cdf.png)" in text


def test_csv_and_robustbench_json_load_in_pandas(board):
    import pandas as pd
    root, out, text = board
    frame = pd.read_csv(out / "robust.csv")
    entries = pd.read_json(out / "robust.robustbench.json")
    assert "[robust.csv](robust.csv) · [robust.robustbench.json](robust.robustbench.json)" in text
    assert list(frame["plugin"]) == [row[1].split(" ")[0] for row in table(text, "## Leaderboard")[1:]]
    assert {"rho_best", "rho_best_std", "rho_overstatement", "ra_autoattack:Linf:0.0313725", "R", "test_acc"} \
        <= set(frame.columns)
    lpc = frame.set_index("plugin").loc["LPC"]
    best = [r["evaluations"]["best_known"]["rho_best_mean"] for r in results(root, "LPC")]
    assert lpc["rho_best"] == pytest.approx(statistics.fmean(best))
    assert lpc["rho_best_std"] == pytest.approx(statistics.stdev(best)) and lpc["rho_best_n"] == 2
    assert frame.set_index("plugin").loc["LinPen", "reliability"].startswith("potentially unreliable")
    assert len(entries) == len(PLUGINS)
    assert set(entries.columns) >= {"clean_acc", "autoattack_acc", "external", "unreliable", "eps", "architecture",
                                    "footnote"}
    by_name = entries.set_index("name")
    runs = results(root, "LPC")
    autoattack = statistics.fmean(r["evaluations"]["attacks"]["per_attack"]["autoattack-linf"]["robust_accuracy"]
                                  ["0.0313725"] for r in runs)
    external = statistics.fmean(r["evaluations"]["best_known"]["robust_accuracy"]["Linf"]["0.0313725"] for r in runs)
    assert by_name.loc["LPC", "autoattack_acc"] == pytest.approx(round(autoattack * 100, 2))
    assert by_name.loc["LPC", "external"] == pytest.approx(round(external * 100, 2))
    assert by_name.loc["LPC", "clean_acc"] == pytest.approx(round(statistics.fmean(r["test_acc"] for r in runs) * 100, 2))
    assert set(by_name["eps"]) == {"8/255"} and set(by_name["threat_model"]) == {"Linf"}
    assert list(by_name["unreliable"][by_name["unreliable"]].index) == ["LinPen"]
    assert "apgd-ce and apgd-t only" in by_name.loc["NoPen", "footnote"]


def test_old_and_new_runs_in_one_table(tmp_path):
    """Runs without the new evaluators render with "–" in the new columns."""
    root = make_tree(tmp_path / "runs")
    for path in (root / "robust" / "NoPen").rglob("result.json"):
        data = json.loads(path.read_text())
        for name in ("best_known", "reliability"):
            data["evaluations"].pop(name)
        data["evaluations"]["attacks"].pop("per_attack")
        path.write_text(json.dumps(data))
    text = report.build_report(root, None, tmp_path / "lb", figures=False).read_text()
    rows = table(text, "## Leaderboard")
    header = rows[0]
    nopen = next(row for row in rows[1:] if row[1] == "NoPen")
    for column in ("ρ best-known", "DeepFool ρ overstated by (%)", "reliability", "RA AutoAttack L∞ ε=8/255 (%)"):
        assert nopen[header.index(column)] == "–", column
    assert rows[-1][1] == "NoPen"     # without the ranking ρ: last


def test_check_compares_the_new_metrics(tmp_path, capsys):
    make_tree(tmp_path / "base", seeds=(0, 1, 2))
    assert main(["baseline", "--runs", str(tmp_path / "base"), "--save", str(tmp_path / "b.json")]) == 0
    baseline = json.loads((tmp_path / "b.json").read_text())
    assert {"rho_best", "rho_overstatement", "ra_best:Linf:0.0313725", "ra_autoattack:Linf:0.0313725"} \
        <= set(baseline["metrics"]["LPC"])
    assert {"rho_best_lpc_10x", "pearson_r_rho_best"} <= set(baseline["claims"])

    def weaker(plugin, seed, values):
        if plugin == "LPC":
            values["overstated"] = 0.8       # a stronger attack now finds much smaller perturbations
    make_tree(tmp_path / "again", change=weaker, seeds=(0, 1, 2))
    capsys.readouterr()
    assert main(["check", "--runs", str(tmp_path / "again"), "--against", str(tmp_path / "b.json")]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| LPC | ρ best-known |"))
    assert "| FAIL |" in row
    assert "| PASS |" in next(line for line in out.splitlines() if line.startswith("| LPC | ρ DeepFool |"))
    assert "| PASS |" in next(line for line in out.splitlines() if line.startswith("| NoPen | ρ best-known |"))


def test_overstatement_pairs_deepfool_and_best_known_on_the_same_inputs():
    from bench.reporting.catalogue import paired_overstatement
    # input 0 and 2 are flipped by both; 1 only by another attack (DeepFool failed); 3 unflipped; 4 misclassified
    per = {"status": ["flipped", "flipped", "flipped", "unflipped", "misclassified"],
           "norm_deepfool": [0.4, None, 0.3, 0.9, None], "norm_best": [0.2, 0.05, 0.3, None, None],
           "x_norm": [2.0, 1.0, 1.0, 1.0, 1.0]}
    rho_df, rho_best = (0.4 / 2 + 0.3) / 2, (0.2 / 2 + 0.3) / 2   # inputs 0 and 2 only, by hand
    assert paired_overstatement(per) == pytest.approx(1 - rho_best / rho_df)
    # the unpaired means (DeepFool's flipped inputs vs every flipped input) would disagree: here
    # best-known's mean includes input 1's tiny ρ and so reads a larger overstatement
    unpaired = 1 - statistics.fmean([0.1, 0.05, 0.3]) / rho_df
    assert unpaired != pytest.approx(paired_overstatement(per))
    # never negative: DeepFool is one of the attacks, so ρ_best ≤ ρ_DeepFool input by input
    per_equal = dict(per, norm_best=[0.4, 0.05, 0.3, None, None])
    assert paired_overstatement(per_equal) == pytest.approx(0.0)
    assert paired_overstatement({"status": ["unflipped"], "norm_deepfool": [None], "norm_best": [None],
                                 "x_norm": [1.0]}) is None
    assert paired_overstatement(None) is None


def test_without_the_deprecated_masking_results_the_deepfool_section_has_no_empty_columns(tmp_path):
    root = make_tree(tmp_path / "runs", seeds=(0,))
    for path in root.rglob("result.json"):
        result = json.loads(path.read_text())
        del result["evaluations"]["masking"]
        path.write_text(json.dumps(result))
    text = report.build_report(root, None, tmp_path / "lb").read_text()
    assert "gradient-masking cross-check" not in text
    rows = table(text, "## DeepFool outcomes")
    assert rows[0] == ["plugin", "flipped", "not flipped", "already misclassified", "median min-norm (other attacks)"]
    lpc = next(r for r in rows if r[0] == "LPC")
    deepfool = json.loads(next(root.rglob("LPC/seed0-lr0.001/result.json")).read_text())["evaluations"]["deepfool"]
    assert lpc[1:4] == [str(deepfool["n_flipped"]), str(deepfool["n_not_flipped"]),
                        str(deepfool["n_already_misclassified"])]


def test_the_reliability_cell_counts_runs_per_check_and_the_reasons_are_listed_run_by_run(board):
    root, _, text = board
    rows = table(text, "## Attack-failure checks, run by run")
    assert rows[0] == ["plugin", "seed", "reasons"]
    assert [r[:2] for r in rows[1:]] == [["LinPen", str(s)] for s in SEEDS]
    assert all(r[2] == UNRELIABLE_REASON for r in rows[1:])


@pytest.mark.parametrize("reason, check", [
    ("loss consistency: at L2 ε = 1 the cross-entropy attacks leave 83.8 % robust, the margin-loss attacks 25.3 % "
     "(gap 58.5 points > 5): cross-entropy may be masked", "loss consistency"),
    ("unbounded sanity: fmn-l2 flipped only 83.2 % of the correct inputs it attacked (need 98.0 %)",
     "unbounded sanity (fmn-l2)"),
    ("unbounded sanity: 3.1 % of the correct inputs resist every attack at ε = ‖x‖₂ (need ≤ 2.0 %)",
     "unbounded sanity"),
    ("AutoAttack's own checks (autoattack-l2@0.5): square_beat_white_box", "AutoAttack: square_beat_white_box"),
    ("DeepFool overstatement: on 45.8 % of the flipped inputs DeepFool's perturbation is more than 1.1× the "
     "best-known one (threshold 25.0 %)", "DeepFool overstatement"),
    ("the model's outputs look like probabilities (rows in [0, 1] summing to 1), not logits",
     "the model's outputs look like probabilities (rows in [0, 1] summing to 1), not logits"),
])
def test_a_reason_names_its_check(reason, check):
    from bench.reporting.summary import reason_check
    assert reason_check(reason) == check


def test_runs_failing_different_checks_are_counted_per_check(tmp_path):
    from bench.reporting.summary import reliability
    from bench.runs.folder import RunRecord
    reasons = {0: ["unbounded sanity: deepfool flipped only 70.3 % of the correct inputs it attacked (need 98.0 %)",
                   "DeepFool overstatement: on 45.1 % of the flipped inputs …"],
               1: ["DeepFool overstatement: on 56.9 % of the flipped inputs …"], 2: []}
    runs = [RunRecord(tmp_path / str(seed), {"run": {"suite": "s", "plugin": "P", "seed": seed, "lr": 0.001}},
                      {"evaluations": {"reliability": {"unreliable": bool(r), "reasons": r}}})
            for seed, r in reasons.items()]
    rel = reliability(runs)
    assert (rel.unreliable, rel.checked) == (2, 3)
    assert rel.checks == (("DeepFool overstatement", 2), ("unbounded sanity (deepfool)", 1))
    assert [seed for seed, _ in rel.per_run] == [0, 1]
