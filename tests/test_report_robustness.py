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
UNRELIABLE_REASON = "400 steps of ddn-l2 (instead of 200) lower the median best-known norm by 12.0 %"
AA_KEY = "ra_autoattack:Linf:0.0313725"
AA_FINDING = {"check": "library_flags", "flag": True, "undermines": [AA_KEY], "covered_by": [],
              "reason": "AutoAttack's own checks (autoattack-linf@0.0313725): square_beat_white_box"}
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
            path = factory.write_run(root, suite, plugin, seed, 0.001, values=values, best_known=True)
            if plugin == "LinPen" and seed == 0:   # a finding about the AutoAttack number alone
                result = json.loads((path / "result.json").read_text())
                result["evaluations"]["reliability"]["findings"].append(AA_FINDING)
                (path / "result.json").write_text(json.dumps(result))
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


HEADLINE = ["#", "plugin", "n", "test acc (%)", "ρ best-known (median)", "ρ DeepFool",
            "RA best-known L∞ ε=8/255 (%)", "RA AutoAttack L∞ ε=8/255 (%)", "best-known ρ vs NoPen", "headline"]


def test_the_headline_has_at_most_ten_columns_and_every_other_column_a_section(board):
    root, _, text = board
    header = table(text, "## Leaderboard")[0]
    assert header == HEADLINE and len(header) <= 10
    assert "## Leaderboard (sorted by best-known ρ" in text
    sections = text.split("## Details by section", 1)[1].split("## Class separation", 1)[0]
    for heading in ("### Minimal perturbation", "### Robust accuracy, L∞", "### Robust accuracy, L2",
                    "### Latent geometry"):
        assert heading in sections, heading
    # every column with a table is in the headline or a section (the CSV keeps them all, detail ones too)
    from bench.reporting.summary import summarise_suite
    from bench.reporting.tables import section_keys
    summary = summarise_suite(root, None)
    for section, keys in section_keys(summary).items():
        for key in keys:
            label = summary.catalogue.spec(key).label
            assert f"| {label} |" in text or f"| {label}" in text, (section, key)
    assert table(sections, "### Robust accuracy, L2")[0][3:] == [
        "RA best-known L2 ε=36/255 (%)", "RA best-known L2 ε=0.5 (%)", "RA best-known L2 ε=1 (%)",
        "RA L2 ε=36/255 (%)", "RA L2 ε=0.5 (%)", "RA L2 ε=1 (%)"]


def test_ties_are_a_paired_test_over_seeds_and_inputs(board):
    """p against the top row, by hand: per seed the mean paired difference of per-input ρ_best, a t test."""
    from scipy import stats
    root, out, text = board
    rows = table(text, "## Leaderboard")[1:]
    order = [row[1] for row in rows]
    top = order[0]

    def rho(plugin):
        return [r["evaluations"]["best_known"]["per_input"]["rho_best"] for r in results(root, plugin)]
    import pandas as pd
    frame = pd.read_csv(out / "robust.csv").set_index("plugin")
    for row, plugin in zip(rows[1:], order[1:]):
        means = [statistics.fmean(a - b for a, b in zip(x, y)) for x, y in zip(rho(plugin), rho(top))]
        p = stats.ttest_1samp(means, 0.0).pvalue
        assert frame.loc[plugin, "p_vs_top"] == pytest.approx(p)
        assert row[0].endswith("(=1)") == (p >= 0.05)


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
        overstated = next(r for r in table(text, "### Minimal perturbation") if r[1] == plugin)
        cell = overstated[table(text, "### Minimal perturbation")[0].index("DeepFool ρ overstated by (%)")]
        assert cell.startswith(f"{statistics.fmean(share) * 100:.2f} ± {statistics.stdev(share) * 100:.2f}")
        aa = [r["evaluations"]["attacks"]["per_attack"]["autoattack-linf"]["robust_accuracy"]["0.0313725"]
              for r in runs]
        assert row[header.index("RA AutoAttack L∞ ε=8/255 (%)")].startswith(f"{statistics.fmean(aa) * 100:.2f} ± ")
        verdict = row[header.index("headline")]
        if plugin == "LinPen":   # convergence doubts the best-known ρ in both runs
            assert verdict == "⚠ 2/2: convergence 2/2"
            assert row[header.index("ρ best-known (median)")].endswith(" ⚠2/2")
            assert row[header.index("RA AutoAttack L∞ ε=8/255 (%)")].endswith(" ⚠1/2")
        else:
            assert verdict == "✓ (2/2 checked)"
            assert "⚠" not in row[header.index("RA AutoAttack L∞ ε=8/255 (%)")]
        # DeepFool overstatement doubts DeepFool's ρ only, and only where it fired
        assert row[header.index("ρ DeepFool")].endswith(" ⚠2/2") == (OVERSTATED[plugin] > 0.3)


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
    assert frame.set_index("plugin").loc["LinPen", "reliability"].startswith("headline potentially unreliable (2/2)")
    assert frame.set_index("plugin").loc["LinPen", "rho_best_doubted"] == 2
    assert frame.set_index("plugin").loc["LinPen", f"{AA_KEY}_doubted"] == 1
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
    # flagged by the finding about the AutoAttack entry, not by convergence (which doubts L2 best-known)
    assert list(by_name["unreliable"][by_name["unreliable"]].index) == ["LinPen"]
    assert not by_name["external_unreliable"].any()
    assert "AutoAttack number doubted by library_flags (seed 0)" in by_name.loc["LinPen", "footnote"]
    assert "doubted" not in by_name.loc["LPC", "footnote"]      # DeepFool findings do not touch the entry
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
    for column in ("ρ best-known (median)", "headline", "RA AutoAttack L∞ ε=8/255 (%)"):
        assert nopen[header.index(column)] == "–", column
    perturbation = table(text, "### Minimal perturbation")
    assert next(r for r in perturbation if r[1] == "NoPen")[perturbation[0].index("ρ best-known")] == "–"
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


def test_the_deepfool_section_has_no_empty_columns(tmp_path):
    root = make_tree(tmp_path / "runs", seeds=(0,))
    text = report.build_report(root, None, tmp_path / "lb").read_text()
    assert "gradient-masking cross-check" not in text
    rows = table(text, "## DeepFool outcomes")
    assert rows[0] == ["plugin", "flipped", "not flipped", "already misclassified", "median min-norm (other attacks)"]
    lpc = next(r for r in rows if r[0] == "LPC")
    deepfool = json.loads(next(root.rglob("LPC/seed0-lr0.001/result.json")).read_text())["evaluations"]["deepfool"]
    assert lpc[1:4] == [str(deepfool["n_flipped"]), str(deepfool["n_not_flipped"]),
                        str(deepfool["n_already_misclassified"])]


def test_the_findings_are_listed_per_check_and_run_by_run_with_the_numbers_they_doubt(board):
    root, _, text = board
    checks = table(text, "## Attack-failure findings")
    assert checks[0] == ["check", "runs failed (plugin k/n)", "runs not measured"]
    by_check = {r[0]: r for r in checks[1:]}
    assert by_check["attack_unit_test"][1:] == ["none", str(len(PLUGINS) * len(SEEDS))]
    assert by_check["convergence"][1] == "LinPen 2/2"
    rows = table(text, "### Failed checks, run by run")
    assert rows[0] == ["plugin", "seed", "check", "doubts", "reason"]
    convergence = [r for r in rows[1:] if r[2] == "convergence"]
    assert [r[:2] for r in convergence] == [["LinPen", str(s)] for s in SEEDS]
    assert all(r[4] == UNRELIABLE_REASON and "ρ best-known (median)" in r[3] and "RA best-known L2 ε=1 (%)" in r[3]
               and "L∞" not in r[3] for r in convergence)
    overstatement = [r for r in rows[1:] if r[2] == "deepfool_overstatement"]
    assert {r[0] for r in overstatement} == {p for p, share in OVERSTATED.items() if share > 0.3}
    assert all(r[3] == "ρ DeepFool, ρ DeepFool (median)" for r in overstatement)


def test_each_finding_undermines_exactly_the_columns_it_declares():
    from bench.evaluation.findings import Finding, column_verdicts, doubted
    keys = ["rho", "rho_best", "rho_best_median", "ra_best:L2:0.5", "ra_best:Linf:0.0313725", "ra:L2:0.5",
            AA_KEY, "minnorm:fmn-l2"]
    masked_ce = Finding("loss_consistency", True, ("attack:pgd-l2:L2:0.5",), ("ra:L2:0.5", "ra_best:L2:0.5"), "")
    deepfool = Finding("deepfool_overstatement", True, ("rho", "rho_median"), ("rho_best",), "")
    convergence = Finding("convergence", True, ("rho_best", "rho_best_median", "ra_best:L2:*"), (), "")
    passed = Finding("convergence", False, ("rho_best",), (), "")
    unmeasured = Finding("attack_unit_test", None, ("rho*",), (), "")
    assert set(k for k, v in column_verdicts([masked_ce, passed, unmeasured], keys).items() if v != "ok") == set()
    assert [k for k, v in column_verdicts([deepfool], keys).items() if v != "ok"] == ["rho"]
    assert sorted(k for k, v in column_verdicts([convergence], keys).items() if v != "ok") == \
        ["ra_best:L2:0.5", "rho_best", "rho_best_median"]
    # coverage is per finding: the CE finding covering ra_best does not cancel convergence's doubt
    assert doubted("ra_best:L2:0.5", [masked_ce, convergence]) == [convergence]


def _run(tmp_path, seed, findings):
    from bench.runs.folder import RunRecord
    return RunRecord(tmp_path / str(seed), {"run": {"suite": "s", "plugin": "P", "seed": seed, "lr": 0.001}},
                     {"evaluations": {"reliability": {"findings": findings}}})


def test_runs_failing_different_checks_are_counted_per_check_and_per_number(tmp_path):
    from bench.reporting.summary import reliability
    deepfool = {"check": "deepfool_overstatement", "flag": True, "undermines": ["rho"], "covered_by": [],
                "reason": "…"}
    convergence = {"check": "convergence", "flag": True, "undermines": ["rho_best"], "covered_by": [], "reason": "…"}
    unmeasured = {"check": "attack_unit_test", "flag": None, "undermines": [], "covered_by": [], "reason": "…"}
    runs = [_run(tmp_path, 0, [deepfool, convergence]), _run(tmp_path, 1, [deepfool, unmeasured]),
            _run(tmp_path, 2, [unmeasured])]
    rel = reliability(runs, {"rho", "rho_best", "test_acc"})
    assert (rel.headline_doubted, rel.checked) == (1, 3)
    assert rel.headline_checks == (("convergence", 1),)
    assert rel.flagged == (("deepfool_overstatement", 2), ("convergence", 1))
    assert rel.not_measured == (("attack_unit_test", 2),)
    assert rel.doubted == {"rho": 2, "rho_best": 1}
    assert [seed for seed, _ in rel.per_run] == [0, 1]
