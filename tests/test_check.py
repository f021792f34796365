"""`bench check` / `bench baseline`: pass on matching results, fail on planted regressions,
one clear line and exit 2 on bad input."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from scipy import stats as sps

from bench.cli.main import main
from bench.reporting import claims, compare as check, stats
from bench.reporting.baseline import BASELINE_SCHEMA, default_path
from bench.reporting.stats import Stat
from bench.reporting.summary import Correlation

FIXTURES = Path(__file__).resolve().parent / "fixtures"
_spec = importlib.util.spec_from_file_location("lpc_runs_factory", FIXTURES / "runs_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)

PLUGINS = ("LPC", "LPC-NARROW", "LinPen", "NoPen")


def make_runs(root: Path, *, seeds=(0, 1, 2), change=None, name="fixture-digits", **suite_changes) -> Path:
    """A complete suite tree; ``change(plugin, seed, values)`` may edit each run's numbers."""
    suite = factory.suite_config(name=name, plugins=PLUGINS, seeds=seeds, lrs=(0.001,), **suite_changes)
    for plugin in PLUGINS:
        for seed in seeds:
            values = factory.run_values(plugin, seed, 0.001)
            if change:
                change(plugin, seed, values)
            factory.write_run(root, suite, plugin, seed, 0.001, values=values)
    return root


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def baseline(tmp_path, capsys):
    runs = make_runs(tmp_path / "base")
    path = tmp_path / "baseline.json"
    code, out, _ = run_cli(["baseline", "--runs", str(runs), "--save", str(path)], capsys)
    assert code == 0 and str(path) in out
    return path


def _row(out: str, plugin: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"| {plugin} | {label} |"))


# --------------------------------------------------------------------------- baselines

def test_check_passes_on_matching_results(tmp_path, baseline, capsys):
    runs = make_runs(tmp_path / "again")
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", str(baseline)], capsys)
    assert code == 0, out
    assert "PASSED" in out and "FAIL |" not in out
    assert "Welch's two-sided t-test" in out and "family-wise α = 0.05" in out


def test_baseline_file_is_reproducible(tmp_path, baseline, capsys):
    again = tmp_path / "again.json"
    assert main(["baseline", "--runs", str(tmp_path / "base"), "--save", str(again)]) == 0
    assert again.read_bytes() == baseline.read_bytes()
    data = json.loads(baseline.read_text())
    assert data["schema"] == BASELINE_SCHEMA and data["suite"] == "fixture-digits"
    assert data["metrics"]["LPC"]["rho"]["n"] == 3
    assert data["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert set(data["claims"]) == {"r_family_100x", "rho_lpc_10x", "sigma_w_100x", "acc_lpc_vs_nopen", "pearson_r_rho"}


def test_check_fails_when_a_metric_moved(tmp_path, baseline, capsys):
    def halve_rho(plugin, seed, values):
        if plugin == "LPC":
            values["rho"] *= 0.5
    runs = make_runs(tmp_path / "moved", change=halve_rho)
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", str(baseline)], capsys)
    assert code == 1
    assert "| FAIL |" in _row(out, "LPC", "ρ DeepFool")
    assert "| PASS |" in _row(out, "NoPen", "ρ DeepFool")
    assert "FAILED" in out.splitlines()[-1]


def test_check_fails_when_a_shape_claim_breaks(tmp_path, baseline, capsys):
    # LPC's accuracy falls 0.5 point (inside the 1-point floor: no metric row fails) but is
    # now clearly below NoPen's: the claim held in the baseline and no longer holds
    accuracies = {"LPC": (0.9745, 0.9750, 0.9755), "NoPen": (0.9805, 0.9810, 0.9815)}
    base_acc = {"LPC": (0.975, 0.980, 0.985), "NoPen": (0.976, 0.981, 0.986)}

    def set_acc(table):
        def change(plugin, seed, values):
            if plugin in table:
                values["test_acc"] = table[plugin][seed]
        return change
    make_runs(tmp_path / "b2", change=set_acc(base_acc))
    base_path = tmp_path / "b2.json"
    assert main(["baseline", "--runs", str(tmp_path / "b2"), "--save", str(base_path)]) == 0
    assert json.loads(base_path.read_text())["claims"]["acc_lpc_vs_nopen"]["status"] == "holds"
    runs = make_runs(tmp_path / "claim", change=set_acc(accuracies))
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", str(base_path)], capsys)
    assert code == 1
    assert "| PASS |" in _row(out, "LPC", "test acc (%)")
    claim = next(line for line in out.splitlines() if line.startswith("| LPC's test accuracy"))
    assert "| does not hold | holds | FAIL |" in claim
    assert sum("| FAIL |" in line for line in out.splitlines()) == 1


def test_claim_not_held_in_baseline_is_not_a_regression(tmp_path, baseline, capsys):
    runs = make_runs(tmp_path / "again")
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", str(baseline)], capsys)
    line = next(line for line in out.splitlines() if line.startswith("| LPC-family R"))
    assert "| does not hold | does not hold | PASS |" in line and "not a regression" in line


def test_missing_evaluation_fails(tmp_path, baseline, capsys):
    def drop_lipschitz(plugin, seed, values):
        if plugin == "NoPen":
            values["lipschitz"] = None
    runs = make_runs(tmp_path / "nolip", change=drop_lipschitz)
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", str(baseline)], capsys)
    assert code == 1
    assert "missing in these runs" in _row(out, "NoPen", "Lipschitz (mean)")


def test_failed_run_fails_the_check_and_blocks_a_baseline(tmp_path, baseline, capsys):
    runs = make_runs(tmp_path / "withfail")
    suite = factory.suite_config(plugins=PLUGINS, seeds=(0, 1, 2), lrs=(0.001,))
    factory.write_run(runs, suite, "LinPen", 2, 0.001, status="failed")
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", str(baseline)], capsys)
    assert code == 1
    assert "LinPen/seed2-lr0.001 | failed" in out and "a check needs every run" in out
    code, _, err = run_cli(["baseline", "--runs", str(runs), "--save", str(tmp_path / "x.json")], capsys)
    assert code == 2 and "failed or are unfinished" in err


def test_ci_style_single_seed_identical_passes_and_regression_fails(tmp_path, capsys):
    make_runs(tmp_path / "one", seeds=(0,))
    base = tmp_path / "one.json"
    assert main(["baseline", "--runs", str(tmp_path / "one"), "--save", str(base)]) == 0
    code, out, _ = run_cli(["check", "--runs", str(tmp_path / "one"), "--against", str(base)], capsys)
    assert code == 0, out

    def worse(plugin, seed, values):
        if plugin == "LinPen":
            values["test_acc"] -= 0.02
    runs = make_runs(tmp_path / "one-worse", seeds=(0,), change=worse)
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", str(base)], capsys)
    assert code == 1
    assert "no spread to test" in _row(out, "LinPen", "test acc (%)")


# --------------------------------------------------------------------------- published

def published_runs(root: Path, change=None) -> Path:
    """A cifar10 suite whose 3 seeds per model have exactly the paper's mean and std."""
    from bench.reporting.published import load_published
    order, values = load_published("cifar10")
    suite = factory.suite_config(name="cifar10-fixture", dataset="cifar10", plugins=order, seeds=(0, 1, 2),
                                 lrs=(0.001,))
    widths = {"LPC-NARROW": 16, "LPC-WIDE": 128, "LPC-NoPen": 512, "SCL": 512, "ArcFace": 512, "CosFace": 512,
              "NoPen": 512}
    for model in order:
        pub = values[model]
        for seed, k in zip((0, 1, 2), (-1.0, 0.0, 1.0)):
            def at(key, fallback=None):
                v = pub.get(key)
                if v is None:
                    return fallback
                return v.mean + k * (v.std or 0.0)
            dim = widths.get(model, 64)
            v = dict(dim=dim, latent="z" if dim <= 128 else "h", test_acc=at("test_acc"), val_acc=at("test_acc"),
                     rho=at("rho"), R=at("R"), sigma_w_mean_entry=at("sigma_w_mean_entry"),
                     sigma_w_trace=at("sigma_w_mean_entry") * dim, cv_norm=at("cv_norm"),
                     cv_abs=at("cv_abs", 0.5), entropy=at("entropy_per_dim"), zero_knn=0.0, nc1=0.1,
                     gmm=at("gmm_score_mean"), gmm_min=at("gmm_score_min"), sigma_mean=0.1,
                     peaks=at("peaks_dist_mean"), peaks_min=at("peaks_dist_min"), lipschitz=1.0,
                     gamma=model.startswith("LPC"))
            if change:
                change(model, seed, v)
            factory.write_run(root, suite, model, seed, 0.001, values=v)
    return root


def test_check_against_published_passes_on_the_papers_numbers(tmp_path, capsys):
    runs = published_runs(tmp_path / "pub")
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", "published"], capsys)
    assert code == 0, out
    assert "published numbers for cifar10" in out
    assert "| holds | required | PASS |" in out
    assert "Lipschitz" not in out          # only what the paper reports is compared


def test_check_against_published_fails_on_a_moved_metric(tmp_path, capsys):
    def low_rho(model, seed, v):
        if model == "LPC":
            v["rho"] = 0.20 + 0.01 * (seed - 1)
    runs = published_runs(tmp_path / "pub", change=low_rho)
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", "published"], capsys)
    assert code == 1
    row = _row(out, "LPC", "ρ DeepFool")
    assert "| Welch |" in row and "| FAIL |" in row


def test_check_against_published_fails_on_a_broken_claim(tmp_path, capsys):
    accuracy = {"LPC": 0.9440, "NoPen": 0.9480}    # each within 1 point of the paper, LPC now below NoPen

    def change(model, seed, v):
        if model in accuracy:
            v["test_acc"] = accuracy[model] + 0.0005 * (seed - 1)
    runs = published_runs(tmp_path / "pub", change=change)
    code, out, _ = run_cli(["check", "--runs", str(runs), "--against", "published"], capsys)
    assert code == 1
    assert "| PASS |" in _row(out, "LPC", "test acc (%)")
    claim = next(line for line in out.splitlines() if line.startswith("| LPC's test accuracy"))
    assert "| does not hold | required | FAIL |" in claim


def test_published_needs_a_cifar_suite(tmp_path, capsys):
    runs = make_runs(tmp_path / "digits", seeds=(0,))
    code, out, err = run_cli(["check", "--runs", str(runs), "--against", "published"], capsys)
    assert code == 2 and out == ""
    assert "has no published counterpart" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(suite="digits"), "is a baseline of suite 'digits', not of 'fixture-digits'"),
    (lambda d: d.update(schema=0), "has baseline schema 0; this lpc-bench reads schema 1"),
    (lambda d: d.pop("kind"), "is not an lpc-bench baseline"),
    (lambda d: d["suite_config"]["recipe"].update(epochs=99), "different configuration of suite fixture-digits "
                                                              "(baseline vs runs: recipe.epochs: 99 vs 12)"),
])
def test_bad_baseline_files(tmp_path, baseline, capsys, edit, message):
    data = json.loads(baseline.read_text())
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, out, err = run_cli(["check", "--runs", str(tmp_path / "base"), "--against", str(bad)], capsys)
    assert code == 2 and out == ""
    assert message in err and err.startswith("error: ") and err.count("\n") == 1


def test_bad_runs_directories(tmp_path, baseline, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["check", "--runs", str(empty), "--against", str(baseline)], capsys)
    assert code == 2 and "no runs" in err
    code, _, err = run_cli(["check", "--runs", str(tmp_path / "nowhere"), "--against", str(baseline)], capsys)
    assert code == 2 and "does not exist" in err
    unfinished = tmp_path / "unfinished"
    factory.write_run(unfinished, factory.suite_config(seeds=(0,), lrs=(0.001,)), "LPC", 0, 0.001, status="incomplete")
    code, _, err = run_cli(["check", "--runs", str(unfinished), "--against", str(baseline)], capsys)
    assert code == 2 and "no finished runs of suite fixture-digits" in err
    mixed = make_runs(tmp_path / "mixed", seeds=(0,))
    factory.write_run(mixed, factory.suite_config(name="other", seeds=(0,), lrs=(0.001,)), "LPC", 0, 0.001)
    code, _, err = run_cli(["check", "--runs", str(mixed), "--against", str(baseline)], capsys)
    assert code == 2 and "mixes runs of several suites" in err
    code, _, err = run_cli(["check", "--runs", str(tmp_path / "base"), "--against", str(tmp_path / "no.json")], capsys)
    assert code == 2 and "does not exist" in err
    notjson = tmp_path / "garbage.json"
    notjson.write_text("{not json")
    code, _, err = run_cli(["check", "--runs", str(tmp_path / "base"), "--against", str(notjson)], capsys)
    assert code == 2 and "not readable JSON" in err


# --------------------------------------------------------------------------- the statistics

def test_welch_matches_scipy():
    a, b = Stat(1.0, 0.2, 3), Stat(1.5, 0.4, 5)
    test = stats.difference_test(a, b)
    ref = sps.ttest_ind_from_stats(1.0, 0.2, 3, 1.5, 0.4, 5, equal_var=False)
    assert test.kind == "Welch"
    assert stats.two_sided_p(test) == pytest.approx(ref.pvalue, rel=1e-9)
    single = stats.difference_test(Stat(2.0, None, 1), Stat(1.0, 0.5, 4))
    assert single.kind == "prediction" and single.df == 3
    assert single.t == pytest.approx(1.0 / (0.5 * math.sqrt(1 + 1 / 4)))
    one = stats.difference_test(Stat(1.0, 0.2, 4), Stat(1.5, None, 5))    # published without a spread
    assert one.kind == "one-sample" and one.df == 3 and one.t == pytest.approx(-5.0)
    assert stats.difference_test(Stat(2.0, None, 1), Stat(1.0, None, 1)) is None
    assert stats.difference_test(Stat(2.0, 0.0, 3), Stat(1.0, 0.0, 3)) is None


def test_holm_step_down():
    rows = [check.Comparison("p", m, None, None, "Welch", "pending", p) for m, p in
            (("a", 0.01), ("b", 0.02), ("c", 0.04))]
    check.holm(rows, 0.05)      # thresholds 0.0167, 0.025, 0.05: all three rejected
    assert [r.verdict for r in rows] == ["fail", "fail", "fail"]
    rows = [check.Comparison("p", m, None, None, "Welch", "pending", p) for m, p in
            (("a", 0.01), ("b", 0.03), ("c", 0.04))]
    check.holm(rows, 0.05)      # 0.03 > 0.025 stops the procedure
    assert [r.verdict for r in rows] == ["fail", "pass", "pass"]


def _stats(**per_plugin):
    return {p: {k: Stat(*v) for k, v in metrics.items()} for p, metrics in per_plugin.items()}


def test_each_claim_holds_and_breaks():
    good = _stats(LPC={"R": (300, 50, 5), "rho": (0.5, 0.1, 5), "sigma_w_per_dim": (1e-10, 1e-11, 5),
                       "test_acc": (0.95, 0.001, 5)},
                  NoPen={"R": (2, 0.1, 5), "rho": (0.013, 0.001, 5), "sigma_w_per_dim": (0.03, 0.01, 5),
                         "test_acc": (0.945, 0.001, 5)})
    result = claims.evaluate_claims(good, {"rho": Correlation(0.95, 20)})
    assert [c.status for c in result] == ["holds"] * 5
    bad = _stats(LPC={"R": (150, 50, 5), "rho": (0.1, 0.1, 5), "sigma_w_per_dim": (1e-3, 1e-4, 5),
                      "test_acc": (0.94, 0.001, 5)},
                 NoPen={"R": (2, 0.1, 5), "rho": (0.013, 0.001, 5), "sigma_w_per_dim": (0.03, 0.01, 5),
                        "test_acc": (0.945, 0.001, 5)})
    result = claims.evaluate_claims(bad, {"rho": Correlation(0.5, 20)})
    # R 75× < 100×; ρ 7.7× < 10×; Σ_W 30× < 100×; accuracy significantly below; r = 0.5 < 0.9
    assert [c.status for c in result] == ["does not hold"] * 5
    skipped = claims.evaluate_claims(_stats(LPC={"test_acc": (0.9, None, 1)}), {})
    assert [c.status for c in skipped] == ["skipped"] * 5
    assert "NoPen has no R" in skipped[0].detail


def test_the_robustness_claims_are_made_on_best_known_rho_too():
    """DeepFool's ρ may hold the 10× claim while the best-known ρ (the smallest perturbation any
    attack found) does not: both are evaluated, each on its own numbers."""
    both = _stats(LPC={"rho": (0.5, 0.1, 3), "rho_best": (0.1, 0.01, 3)},
                  NoPen={"rho": (0.04, 0.01, 3), "rho_best": (0.03, 0.01, 3)})
    result = {c.key: c for c in claims.evaluate_claims(both, {"rho": Correlation(0.95, 9),
                                                              "rho_best": Correlation(0.4, 9)})}
    assert result["rho_lpc_10x"].status == "holds" and result["rho_lpc_10x"].value == pytest.approx(12.5)
    assert result["rho_best_lpc_10x"].status == "does not hold"
    assert result["rho_best_lpc_10x"].value == pytest.approx(0.1 / 0.03)
    assert result["pearson_r_rho"].status == "holds" and result["pearson_r_rho_best"].status == "does not hold"
    # without any best-known ρ the claims are the paper's five (old runs, old baselines)
    only_deepfool = _stats(LPC={"rho": (0.5, 0.1, 3)}, NoPen={"rho": (0.04, 0.01, 3)})
    assert [c.key for c in claims.evaluate_claims(only_deepfool, {})] == [
        "r_family_100x", "rho_lpc_10x", "sigma_w_100x", "acc_lpc_vs_nopen", "pearson_r_rho"]


# --------------------------------------------------------------------------- CI

def test_committed_ci_baseline_matches_the_ci_suite():
    """The committed baseline predates plugin parameters (its suite_config holds recipe.gamma_*):
    read through the one identity definition it still fits the current digits-ci suite."""
    from bench.suites import load_suite
    from bench.runs.folder import RunSpec, run_config, suite_differences
    path = default_path("digits-ci")
    if not path.exists():
        pytest.skip("bench/baselines/digits-ci.json not committed yet")
    data = json.loads(path.read_text())
    suite = load_suite("digits-ci")
    config = run_config(suite, RunSpec(suite.name, suite.plugins[0], suite.seeds[0], suite.lrs[0]))
    assert data["schema"] == BASELINE_SCHEMA and data["suite"] == "digits-ci"
    assert suite_differences(data["suite_config"], config["suite"]) == ""
    assert suite_differences(data["suite_config"], load_suite("digits-ci", ["plugin_params.LPC.gamma.factor=1.3"])
                             .to_dict()).startswith("plugin_params.LPC.gamma.factor: 1.2 vs 1.3")
    assert set(data["metrics"]) == set(suite.plugins)
