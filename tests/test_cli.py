"""``python -m bench`` as a user meets it: every kind of bad input ends with
exit code 2 and exactly one ``error: …`` line on stderr (no traceback, nothing trained);
``bench list`` names the 11 plugins; a diverging run is recorded, the sweep goes on, and the
command exits non-zero with one line naming the run and the problem.

The brief's bad inputs run as real subprocesses (a few at a time: each is mostly interpreter
start-up); further cases go through ``bench.cli.main.main`` in-process."""
from __future__ import annotations

import json
import time

import pytest

from conftest import leftover_temporaries, start_cli

MALFORMED_YAML = "name: broken\nplugins: [LPC, NoPen\nseeds: [0]\n"
UNKNOWN_KEY_YAML = "name: keys\nplugins: [LPC]\nrecipe:\n  epochs: 2\n  epochz: 3\n"
UNKNOWN_PLUGIN_YAML = "name: plugs\nplugins: [LPC, Nopen]\n"

# case -> (arguments, text the error line must contain); run as real subprocesses
BAD_INPUT = {
    "unknown suite": (["run", "--suite", "no-such-suite"], "unknown suite 'no-such-suite'"),
    "unknown plugin": (["run", "--plugins", "LPC", "NOPE"], "NOPE"),
    "unknown override key": (["run", "--set", "recipe.epochz=3"], "recipe.epochz"),
    "wrong type": (["run", "--set", "recipe.epochs=abc"], "recipe.epochs"),
    "malformed YAML": (["run", "--suite", "broken.yaml"], "line 3"),
}
# more of the same, through bench.cli.main.main in this process (same code path, no start-up cost)
MORE_BAD_INPUT = {
    "unknown plugin in suite file": (["run", "--suite", "plugs.yaml"], "unknown plugin 'Nopen'"),
    "unknown plugin via --set": (["run", "--set", "plugins=[LPCX]"], "unknown plugin 'LPCX'"),
    "unknown key in suite file": (["run", "--suite", "keys.yaml"], "recipe.epochz"),
    "wrong type (choice)": (["run", "--set", "recipe.augment=rotate"], "recipe.augment"),
    "wrong type (pair)": (["run", "--set", "recipe.margin_scale=[1]"], "recipe.margin_scale"),
    "non-finite number": (["run", "--set", "plugin_params.LPC.gamma.start=.inf"], "plugin_params.LPC.gamma"),
    "moved recipe key": (["run", "--set", "recipe.gamma_start=1"], "plugin_params.LPC.gamma.start"),
    "mistyped plugin parameter": (["run", "--set", "plugin_params.LPC.gama.cap=1"], "plugin_params.LPC.gama"),
    "missing suite file": (["run", "--suite", "missing.yaml"], "does not exist"),
    "override without value": (["run", "--set", "recipe.epochs"], "key=value"),
    "seed not in suite": (["run", "--seeds", "7"], "seed(s) 7"),
    "unknown device": (["run", "--device", "tpu9", "--plugins", "NoPen", "--seeds", "0"], "tpu9"),
    "unknown evaluator": (["run", "--set", "evaluation.evaluators=[deepfoo]"], "unknown evaluator 'deepfoo'"),
    "suite name escaping --out": (["run", "--set", "name=../x"], "suite name"),
}
PARALLEL = 3  # at most this many interpreters starting at once on the shared cores


def write_suite_files(folder) -> None:
    (folder / "broken.yaml").write_text(MALFORMED_YAML)
    (folder / "keys.yaml").write_text(UNKNOWN_KEY_YAML)
    (folder / "plugs.yaml").write_text(UNKNOWN_PLUGIN_YAML)


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Run every bad-input command (and `bench list`), a few at a time; collect their outcomes."""
    root = tmp_path_factory.mktemp("cli")
    pending = list(BAD_INPUT.items())
    running, outcomes = {}, {}
    deadline = time.monotonic() + 400
    while pending or running:
        while pending and len(running) < PARALLEL:
            case, (args, _) = pending.pop(0)
            folder = root / "".join(c if c.isalnum() else "_" for c in case)
            folder.mkdir()
            write_suite_files(folder)
            running[case] = (start_cli(args, folder), folder)
        for case, (proc, folder) in list(running.items()):
            if proc.poll() is None and time.monotonic() > deadline:
                proc.kill()
                proc.wait()
            if proc.poll() is not None:
                outcomes[case] = (proc.returncode, (folder / "stdout.txt").read_text(),
                                  (folder / "stderr.txt").read_text(), folder)
                del running[case]
        time.sleep(0.05)
    return outcomes


def assert_one_error_line(code: int, stdout: str, stderr: str, needle: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stdout, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_error_line_and_exit_2(bad_input_runs, case):
    code, stdout, stderr, folder = bad_input_runs[case]
    assert_one_error_line(code, stdout, stderr, BAD_INPUT[case][1])
    assert not (folder / "runs").exists() and not (folder / "leaderboards").exists()


@pytest.mark.parametrize("case", list(MORE_BAD_INPUT))
def test_more_bad_input_in_process(tmp_path, monkeypatch, capsys, case):
    from bench.cli.main import main
    monkeypatch.chdir(tmp_path)
    write_suite_files(tmp_path)
    args, needle = MORE_BAD_INPUT[case]
    code = main(list(args))
    captured = capsys.readouterr()
    assert_one_error_line(code, captured.out, captured.err, needle)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "leaderboards").exists()


def test_list_names_the_eleven_plugins(capsys):
    from bench.cli.main import main
    code = main(["list"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    sections = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    plugins = [p.strip() for p in sections["plugins"].split(",")]
    builtins = {"LPC", "LPC-WIDE", "LPC-NARROW", "LPC-NoPen", "LPC-SCL", "LinPen", "NonlinPen", "SCL", "ArcFace",
                "CosFace", "NoPen",
                "PGD-AT", "TRADES", "InputGradNorm", "LPC-PGD-AT"}   # the positive controls and LPC + PGD-AT
    assert set(plugins) >= builtins and len(plugins) == len(set(plugins))   # an installed plugin may add more
    from registry import get_plugin_class
    assert {p for p in plugins if get_plugin_class(p).__module__.startswith("registry.plugins")} == builtins
    assert "digits" in sections["suites"]
    assert {"suites", "plugins", "datasets", "backbones", "attacks", "metrics"} <= set(sections)


def test_a_diverging_run_fails_the_command_in_one_line_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    """γ at float32's limit overflows the penalty of a 1024-wide latent at the first step; NoPen
    (no γ) trains normally in the same sweep. (In-process through ``bench.cli.main.main``: the
    subprocess cases above already show what the interpreter adds.)"""
    from bench.cli.main import main
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--plugins", "LPC", "NoPen", "--seeds", "0", "--quiet", "--no-report",
                 "--set", "plugin_params.LPC.gamma={start: 3e38, factor: 1.05, cap: 3e38}",
                 "--set", "latent_widths.intermediate=1024", "--set", "dataset.limit_train=128",
                 "--set", "recipe.epochs=2", "--set", "evaluation.evaluators=[]"])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code != 0 and code != 2, output   # 2 is for bad input
    assert "Traceback" not in output
    naming = [line for line in output.splitlines() if "LPC/seed0" in line]
    assert len(naming) == 1, output
    assert "inf" in naming[0] or "nan" in naming[0]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 run(s) failed" in errors[0], captured.err

    runs = tmp_path / "runs" / "digits"
    failed = json.loads((runs / "LPC" / "seed0-lr0.001" / "result.json").read_text())
    assert failed["status"] == "failed"
    assert failed["failure"]["epoch"] == 0 and "penalty" in failed["failure"]["reason"]
    done = json.loads((runs / "NoPen" / "seed0-lr0.001" / "result.json").read_text())
    assert done["status"] == "done" and done["test_acc"] > 0.1
    assert leftover_temporaries(tmp_path) == []


# ----- one meaning per flag: --runs, --leaderboards; a suite by path; status -------------------
TINY_RUN = ["run", "--plugins", "NoPen", "--seeds", "0", "--quiet", "--set", "recipe.epochs=1",
            "--set", "dataset.limit_train=128", "--set", "evaluation.evaluators=[]"]


def _bench(capsys, *args):
    from bench.cli.main import main
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_leaderboard_lies_beside_its_runs_and_the_committed_ones_are_left_alone(tmp_path, monkeypatch, capsys):
    """`bench run --runs DIR` (or its older name --out) writes DIR/leaderboards/<suite>.md, never
    ./leaderboards; --leaderboards names another place; report and run agree on both flags."""
    monkeypatch.chdir(tmp_path)
    TINY_RUN = [a for a in globals()["TINY_RUN"] if a != "--quiet"]   # the paths are printed, not under --quiet
    code, out, err = _bench(capsys, *TINY_RUN, "--runs", "exp")
    assert code == 0, err
    assert "leaderboard: exp/leaderboards/digits.md" in out and (tmp_path / "exp/leaderboards/digits.md").is_file()
    assert not (tmp_path / "leaderboards").exists()
    code, out, err = _bench(capsys, *TINY_RUN, "--out", "exp")          # the older name, the same meaning
    assert code == 0 and "1 already done" in out and "leaderboard: exp/leaderboards/digits.md" in out
    code, out, _ = _bench(capsys, *TINY_RUN, "--runs", "exp", "--leaderboards", "boards")
    assert code == 0 and (tmp_path / "boards/digits.md").is_file()
    code, out, _ = _bench(capsys, "report", "--runs", "exp")
    assert code == 0 and out.strip() == "leaderboard: exp/leaderboards/digits.md"
    code, out, _ = _bench(capsys, "report", "--out", "exp", "--leaderboards", "elsewhere")
    assert code == 0 and (tmp_path / "elsewhere/digits.md").is_file()
    code, out, err = _bench(capsys, "report", "--runs", "exp", "--out", "leaderboards")   # the old report usage
    assert_one_error_line(code, out, err, "--out is the older name of --runs")
    assert not (tmp_path / "leaderboards").exists()


def test_report_check_and_baseline_take_a_suite_file_like_run(tmp_path, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("lpc_runs_factory", Path(__file__).parent / "fixtures" / "runs_factory.py")
    factory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factory)
    monkeypatch.chdir(tmp_path)
    suite = factory.suite_config(name="mine", plugins=("LPC", "NoPen"), seeds=(0,), lrs=(0.001,))
    for plugin in ("LPC", "NoPen"):
        factory.write_run(tmp_path / "runs", suite, plugin, 0, 0.001)
    factory.write_run(tmp_path / "runs", factory.suite_config(name="other", seeds=(0,), lrs=(0.001,)), "LPC", 0, 0.001)
    (tmp_path / "my.yaml").write_text("name: mine\nplugins: [LPC, NoPen]\n")
    (tmp_path / "nobody.yaml").write_text("name: nobody\nplugins: [LPC]\n")
    code, out, err = _bench(capsys, "report", "--suite", "my.yaml", "--leaderboards", "lb")
    assert code == 0, err
    assert (tmp_path / "lb" / "mine.md").is_file()
    assert _bench(capsys, "baseline", "--suite", "my.yaml", "--save", "b.json")[0] == 0
    code, out, err = _bench(capsys, "check", "--suite", "my.yaml", "--against", "b.json")
    assert code == 0 and "suite `mine`" in out, out + err
    code, out, err = _bench(capsys, "check", "--suite", "nobody.yaml", "--against", "b.json")
    assert_one_error_line(code, out, err, "no runs of suite nobody under runs")
    code, out, err = _bench(capsys, "report", "--suite", "missing.yaml")
    assert_one_error_line(code, out, err, "does not exist")


def test_status_exits_like_the_other_verbs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    for args in (["status", "--runs", "empty"], ["status", "--runs", "missing"], ["report", "--runs", "empty"],
                 ["check", "--runs", "empty", "--against", "x.json"]):
        code, out, err = _bench(capsys, *args)
        assert_one_error_line(code, out, err, "runs")
    assert _bench(capsys, *TINY_RUN, "--runs", "exp", "--no-report")[0] == 0
    code, out, _ = _bench(capsys, "status", "--runs", "exp")
    assert code == 0 and "digits/NoPen/seed0-lr0.001  done" in out and out.strip().endswith("0 pending, 0 running, 1 done, 0 failed")
    code, out, _ = _bench(capsys, "status", "--runs", "exp", "--only", "failed")
    assert code == 0 and out.strip() == "no failed runs"


def test_bench_alone_or_with_run_flags_runs_the_default_suite():
    from bench.cli.main import build_parser, with_default_command
    commands = build_parser()._subparsers._group_actions[0].choices
    assert with_default_command([], commands) == ["run"]
    assert with_default_command(["--quiet"], commands) == ["run", "--quiet"]
    assert with_default_command(["report", "--runs", "x"], commands) == ["report", "--runs", "x"]
    assert with_default_command(["--help"], commands) == ["--help"]
