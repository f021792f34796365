"""The architecture as a contract: ``lint-imports`` (import-linter, contracts in pyproject.toml)
passes on this tree, and fails, naming the contract, when a module imports against it.

The contracts: ``lpc`` <- ``registry`` <- ``bench``; bench's subpackages in layers (cli on
top, core at the bottom); reporting never reaches training, executors, data or models; no
import cycle among the modules of any package. Imports inside functions count.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, cli_env

pytest.importorskip("importlinter")
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv = ['lint-imports']; lint_imports_command()"]


def lint(root) -> subprocess.CompletedProcess:
    env = cli_env()
    env["PYTHONPATH"] = str(root)
    return subprocess.run(LINT, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_hold():
    proc = lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("bench/core/io.py", "from bench.reporting import report  # noqa", "bench's subpackages import only downwards"),
    ("lpc/penalty.py", "import registry  # noqa", "lpc <- registry <- bench"),
    ("bench/reporting/format.py", "from bench.training import trainer  # noqa", "a report comes from run folders alone"),
    ("bench/reporting/stats.py", "def _back():\n    from bench.reporting import summary  # noqa\n",
     "no import cycles"),
])
def test_a_back_import_breaks_the_contract(tmp_path, module, line, contract):
    for part in ("bench", "registry", "lpc"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "*.csv"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint(tmp_path).returncode == 0
    path = tmp_path / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    broken = proc.stdout.split("Broken contracts")[-1]
    assert contract in " ".join(broken.split()), proc.stdout
