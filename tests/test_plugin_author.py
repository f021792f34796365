"""A new regularizer, as its author meets lpc-bench: the README's example file, imported with
``--import``, run with ``--plugins``, its parameter set with ``--set plugin_params.X.k=v``;
it reaches the leaderboard and ``bench check``, later commands on its runs reload it, a
mistyped parameter is an error, and the project's own registry tests hold for it.

Also a third-party *evaluator*: its declared columns reach the leaderboard, the CSV and
``bench check`` with no edit to lpc-bench.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, cli_env, run_cli

# The README's "Add a regularizer" example, verbatim (README.md must show this block).
README_EXAMPLE = '''\
# my_plugins.py
from dataclasses import dataclass

import torch
from torch import nn

from registry import Plugin, register_plugin


@register_plugin("CenterLoss")
class CenterLoss(Plugin):
    """CenterLoss (Wen et al., ECCV 2016): CE + λ/2 · mean ‖h − c_y‖²; class centres c learned with the rest.

    Defaults: λ = 0.01.
    """

    @dataclass(frozen=True)
    class Params:                                  # every tunable parameter, with its default
        lam: float = 0.01                          # λ; a suite sets it: plugin_params: {CenterLoss: {lam: 0.1}}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)          # sets feature_dim, num_classes, params, classifier …
        self.centers = nn.Parameter(torch.zeros(self.num_classes, self.feature_dim))

    def loss_terms(self, out, y):                  # out.logits, out.latent, out.features (h)
        pull = (out.features - self.centers[y]).pow(2).sum(1).mean() / 2
        return {"ce": self.cross_entropy(out, y), "center": self.params.lam * pull}
'''
FAST = ["--suite", "digits", "--seeds", "0", "--quiet",
        "--set", "recipe.epochs=2", "--set", "dataset.limit_train=256", "--set", "dataset.limit_test=60",
        "--set", "evaluation.evaluators=[deepfool, geometry]", "--set", "evaluation.subset_size=40"]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
_spec = importlib.util.spec_from_file_location("lpc_runs_factory", FIXTURES / "runs_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)


def bench(args: list[str], cwd: Path) -> SimpleNamespace:
    """``bench ARGS`` in this process (the module import is what a fresh interpreter would
    pay for; ``run_cli`` below is used where a fresh interpreter is the point)."""
    from bench.cli.main import main
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(here)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module", autouse=True)
def forget_the_user_modules():
    """This module imports user files in-process: unregister them afterwards."""
    yield
    from bench.evaluation.hook import EVALUATORS
    from registry import PLUGINS
    PLUGINS.remove("CenterLoss")
    EVALUATORS.remove("my_margin")
    for name in ("my_plugins", "my_evaluators"):
        sys.modules.pop(name, None)


def one_error_line(proc, needle: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_the_readme_shows_the_tested_example():
    readme = (REPO / "README.md").read_text()
    if "plugin_params" not in readme:
        pytest.skip("README.md does not document plugin_params yet (the lead applies the new section)")
    assert README_EXAMPLE.strip() in readme


@pytest.fixture(scope="module")
def author_runs(tmp_path_factory):
    """The README's plugin trained next to NoPen, its λ set on the command line."""
    root = tmp_path_factory.mktemp("author")
    (root / "plugins").mkdir()
    (root / "plugins" / "my_plugins.py").write_text(README_EXAMPLE)
    proc = bench(["run", *FAST, "--import", "plugins/my_plugins.py", "--plugins", "CenterLoss", "NoPen",
                  "--set", "plugin_params.CenterLoss.lam=0.5", "--runs", "runs"], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, proc


def test_an_imported_plugin_runs_with_its_parameter_and_reaches_the_leaderboard(author_runs):
    root, proc = author_runs
    run_dir = root / "runs" / "digits" / "CenterLoss" / "seed0-lr0.001"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["suite"]["plugin_params"]["CenterLoss"] == {"lam": 0.5}
    assert config["imports"] == [str((root / "plugins" / "my_plugins.py").resolve())]
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert {"loss_ce", "loss_center", "loss_total"} <= set(rows[0]) and rows[0]["loss_center"] > 0
    # the leaderboard of a runs tree lies beside it
    board = root / "runs" / "leaderboards" / "digits.md"
    assert board.is_file() and proc.stdout == ""          # --quiet: nothing on stdout
    row = next(line for line in board.read_text().splitlines() if "| CenterLoss |" in line and line.startswith("| "))
    assert re.search(r"\| CenterLoss \| 1 \| \d+\.\d\d \| \d", row), row        # the headline: n, clean acc, ρ
    assert "| CenterLoss | h (256) |" in board.read_text().split("### Latent geometry", 1)[1]
    assert not (root / "leaderboards").exists()


def test_lambda_reaches_the_loss(author_runs, tmp_path):
    """The λ the suite set is the λ the plugin trained with: a second run with λ = 0 has no
    centre term in its loss, while its CE starts the same."""
    root, _ = author_runs
    proc = bench(["run", *FAST, "--import", str(root / "plugins" / "my_plugins.py"), "--plugins", "CenterLoss",
                  "--set", "plugin_params.CenterLoss.lam=0", "--runs", str(tmp_path / "zero"), "--no-report"],
                 tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = lambda base: json.loads((base / "digits" / "CenterLoss" / "seed0-lr0.001" / "log.jsonl")
                                    .read_text().splitlines()[0])
    zero, half = first(tmp_path / "zero"), first(root / "runs")
    assert zero["loss_center"] == 0.0 and half["loss_center"] > 0


def test_later_commands_reload_the_recorded_module_and_check_compares_it(author_runs, tmp_path):
    root, _ = author_runs
    # a fresh interpreter without --import: the run's config.json names the module
    attack = run_cli(["attack", "--runs", "runs", "--attacks", "deepfool", "--quiet"], root)
    assert attack.returncode == 0, attack.stderr
    assert attack.stdout == ""                      # --quiet: nothing on stdout
    baseline = bench(["baseline", "--runs", "runs", "--save", str(tmp_path / "base.json")], root)
    assert baseline.returncode == 0, baseline.stderr
    assert "CenterLoss" in json.loads((tmp_path / "base.json").read_text())["metrics"]
    check = bench(["check", "--runs", "runs", "--against", str(tmp_path / "base.json")], root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert any(line.startswith("| CenterLoss | ρ DeepFool |") and "| PASS |" in line
               for line in check.stdout.splitlines())


def test_plugin_author_mistakes_are_one_error_line(author_runs):
    root, _ = author_runs
    plugin = ["--import", "plugins/my_plugins.py", "--plugins", "CenterLoss", "--runs", "other"]
    one_error_line(bench(["run", *FAST, *plugin, "--set", "plugin_params.CenterLoss.lamda=0.5"], root),
                   "unknown key plugin_params.CenterLoss.lamda (known: lam)")
    one_error_line(bench(["run", *FAST, *plugin, "--set", "plugin_params.CenterLoss.lam=much"], root),
                   "plugin_params.CenterLoss.lam: expected a number")
    one_error_line(bench(["run", *FAST, "--import", "no_such_plugins", "--plugins", "NoPen"], root),
                   "no module named 'no_such_plugins'")
    one_error_line(bench(["run", *FAST, "--import", "plugins/missing.py"], root), "no such file")
    broken = root / "plugins" / "broken_plugins.py"
    broken.write_text("import torch\nraise RuntimeError('not ready')\n")
    one_error_line(bench(["run", *FAST, "--import", str(broken)], root),
                   "RuntimeError: not ready (broken_plugins.py, line 2)")
    assert not (root / "other").exists()


def test_a_plugin_not_imported_is_one_error_line_naming_import(tmp_path):
    one_error_line(run_cli(["run", *FAST, "--plugins", "CenterLoss"], tmp_path), "--import")


def test_the_registry_tests_hold_for_the_readme_plugin_installed_as_an_entry_point(tmp_path):
    """With the example installed (entry point), the project's own registry-wide tests and
    `bench list` still pass: nothing in them assumes only the built-ins are registered."""
    (tmp_path / "my_plugins.py").write_text(README_EXAMPLE)
    info = tmp_path / "my_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lpc_bench.plugins]\nmy_plugins = my_plugins\n")
    (info / "RECORD").write_text("")
    script = textwrap.dedent(f"""
        import sys, pytest
        code = pytest.main(["-v", "-p", "no:cacheprovider", "-k", "not entry_points",
                            {str(REPO / "tests" / "test_registry.py")!r},
                            {str(REPO / "tests" / "test_cli.py") + "::test_list_names_the_eleven_plugins"!r}])
        from bench.cli.main import main
        main(["list", "plugins"])
        sys.exit(int(code))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO / "tests", env=cli_env([str(tmp_path)]),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "[CenterLoss]" in proc.stdout               # the registry-wide tests ran on it too
    # names are padded to the longest registered one (InputGradNorm)
    assert re.search(r"^  CenterLoss +CenterLoss \(Wen et al\., ECCV 2016\)", proc.stdout, re.M)
    assert "[params: lam=0.01]" in proc.stdout


# --------------------------------------------------------------------------- a third-party evaluator

EVALUATOR = textwrap.dedent('''\
    """A user's evaluator: a margin score, declared as a leaderboard column."""
    from dataclasses import dataclass

    from bench.evaluation.columns import Column
    from bench.evaluation.hook import register_evaluator


    @dataclass(frozen=True)
    class Options:
        scale: float = 1.0


    @register_evaluator("my_margin", options=Options, kind="metric",
                        columns=(Column("my_margin", "my margin score", ("score",), atol=1e-3),))
    def my_margin(ctx, opts):
        """Mean logit margin (a test evaluator)."""
        return {"score": opts.scale}
''')


def test_a_third_party_evaluator_reaches_the_leaderboard_csv_and_check(tmp_path):
    import pandas as pd
    module = tmp_path / "my_evaluators.py"
    module.write_text(EVALUATOR)
    suite = factory.suite_config(name="third", plugins=("LPC", "NoPen"), seeds=(0, 1), lrs=(0.001,))
    suite["evaluation"]["evaluators"].append("my_margin")
    for plugin, score in (("LPC", 0.8), ("NoPen", 0.3)):
        for seed in (0, 1):
            path = factory.write_run(tmp_path / "runs", suite, plugin, seed, 0.001)
            for name, change in (("config.json", lambda d: d.update(imports=[str(module)])),
                                 ("result.json", lambda d: d["evaluations"].update(my_margin={"score": score + seed / 100}))):
                data = json.loads((path / name).read_text())
                change(data)
                (path / name).write_text(json.dumps(data))
    proc = bench(["report", "--runs", "runs"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    board = (tmp_path / "runs" / "leaderboards" / "third.md").read_text()
    other = board.split("### Other numbers", 1)[1]          # a third-party column's default section
    header = next(line for line in other.splitlines() if line.startswith("| # | plugin |"))
    assert header.rstrip(" |").endswith("my margin score")
    lpc_row = next(line for line in other.splitlines() if line.startswith("| ") and "| LPC |" in line)
    assert lpc_row.rstrip(" |").endswith("0.805 ± 0.007")
    table = pd.read_csv(tmp_path / "runs" / "leaderboards" / "third.csv")
    assert table.set_index("plugin").loc["NoPen", "my_margin"] == pytest.approx(0.305)
    assert bench(["baseline", "--runs", "runs", "--save", "base.json"], tmp_path).returncode == 0
    for path in (tmp_path / "runs").rglob("result.json"):   # the evaluator regresses on LPC
        data = json.loads(path.read_text())
        if data["plugin"] == "LPC":
            data["evaluations"]["my_margin"]["score"] -= 0.5
            path.write_text(json.dumps(data))
    check = bench(["check", "--runs", "runs", "--against", "base.json"], tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    row = next(line for line in check.stdout.splitlines() if line.startswith("| LPC | my margin score |"))
    assert "| FAIL |" in row
    assert "| PASS |" in next(line for line in check.stdout.splitlines()
                              if line.startswith("| NoPen | my margin score |"))
