"""A new user's second hour (issue #23): their own image folder as a suite named after it,
the paper suites at smoke scale, recovery from a damaged checkpoint or result.json, seeds
checked on every path, provenance times that are the run's own, and --help / bench list."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from bench.cli.main import build_parser, main
from bench.runs import folder
from bench.runs.folder import RunSpec
from bench.training import trainer
from bench.training.trainer import train_run

from conftest import REPO, read_run


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    (line,) = [l for l in err.strip().splitlines() if l.strip()]
    assert line.startswith("error: ")
    return line


TINY_RUN = ["--suite", "digits", "--plugins", "NoPen", "--seeds", "0", "--quiet", "--no-report",
            "--set", "dataset.limit_train=256", "--set", "recipe.epochs=3", "--set", "recipe.checkpoint_every=1",
            "--set", "evaluation.evaluators=[deepfool]", "--set", "evaluation.subset_size=40"]


@pytest.fixture
def done_run(tmp_path, capsys):
    """A finished tiny digits run (NoPen, seed 0): (runs root, run folder)."""
    runs = tmp_path / "runs"
    assert cli(capsys, "run", *TINY_RUN, "--runs", runs)[0] == 0
    (run_dir,) = [p.parent for p in runs.rglob("result.json")]
    return runs, run_dir


# ----- a checkpoint that does not load --------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint"])
def test_a_corrupted_checkpoint_restarts_the_run_to_the_numbers_of_a_clean_one(done_run, capsys, damage):
    runs, run_dir = done_run
    clean_result, clean_log = read_run(run_dir)
    (run_dir / "result.json").unlink()                    # the case: result removed
    ckpt = run_dir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000] if damage == "truncated" else b"garbage")
    code, _, err = cli(capsys, "run", *TINY_RUN, "--runs", runs)
    assert code == 0 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"warning: {ckpt} does not load (") and "restarts from epoch 0" in line
    assert (run_dir / folder.CHECKPOINT_SET_ASIDE).exists() and ckpt.exists()
    assert read_run(run_dir) == (clean_result, clean_log)
    assert "restarted" in json.loads((run_dir / "provenance.json").read_text())
    # and never again: a rerun finds the run done
    assert cli(capsys, "run", *TINY_RUN, "--runs", runs)[0] == 0


def test_a_corrupted_checkpoint_in_the_middle_of_a_run_restarts_it(tmp_path, tiny_suite):
    suite = tiny_suite(epochs=3)
    spec = RunSpec(suite.name, "NoPen", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path / "clean").status == "done"
    stop_after = {"epoch": 1}

    def interrupt(epoch):
        if epoch == stop_after["epoch"]:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_run(suite, spec, tmp_path / "damaged", on_epoch_end=interrupt)
    run_dir = spec.directory(tmp_path / "damaged")
    (run_dir / "checkpoint.pt").write_bytes(b"\0" * 64)
    assert train_run(suite, spec, tmp_path / "damaged").status == "done"
    assert read_run(run_dir) == read_run(spec.directory(tmp_path / "clean"))


def test_attacking_a_done_run_whose_checkpoint_does_not_load_is_one_error_line(done_run, capsys):
    runs, run_dir = done_run
    (run_dir / "checkpoint.pt").write_bytes(b"garbage")
    code, _, err = cli(capsys, "attack", "--runs", runs, "--attacks", "fgsm", "--quiet")
    line = one_error_line(err)
    assert code == 2 and "does not load" in line and "weights are lost" in line


# ----- an unreadable result.json: one meaning for every command ----------------------------

def test_a_truncated_result_json_is_failed_for_every_command(done_run, capsys):
    runs, run_dir = done_run
    result = run_dir / "result.json"
    result.write_text(result.read_text()[:100])
    code, out, _ = cli(capsys, "status", "--runs", runs)
    assert code == 0 and "failed" in out and "unreadable: result.json cannot be read" in out
    for command in (["attack", "--attacks", "fgsm"], ["metrics", "--metrics", "geometry"]):
        code, out, err = cli(capsys, command[0], "--runs", runs, *command[1:])
        line = one_error_line(err)
        assert code == 2 and "1 run(s) have a result.json that cannot be read" in line, line
        assert "bench status lists them as failed" in line and "--retry-failed" in line
        assert result.read_text().startswith("{") and len(result.read_text()) == 100   # nothing written
    code, out, _ = cli(capsys, "report", "--runs", runs)
    board = (runs / "leaderboards" / "digits.md").read_text()
    assert code == 0 and "## Runs not counted" in board and "result.json cannot be read" in board
    code, _, err = cli(capsys, "run", *TINY_RUN, "--runs", runs)
    assert code == 1 and "unreadable: result.json cannot be read" in err
    code, _, err = cli(capsys, "run", *TINY_RUN, "--runs", runs, "--retry-failed")
    assert code == 0 and folder.read_result(run_dir)["status"] == "done"


def test_a_result_json_that_is_not_an_object_is_unreadable(tmp_path):
    (tmp_path / "result.json").write_text("[1, 2]")
    assert folder.is_unreadable(folder.read_result(tmp_path))


# ----- seeds: one rule on every path -----------------------------------------------------------

@pytest.mark.parametrize("args", [["--set", "seeds=[-1]"], ["--seeds", "-1"], ["--set", "seeds=[0, -1]"]])
def test_a_negative_seed_is_one_error_line_on_every_path(tmp_path, capsys, args):
    for extra in ([], ["--estimate-only"]):
        code, _, err = cli(capsys, "run", "--runs", tmp_path / "runs", *args, *extra)
        assert code == 2 and "a seed is a whole number from 0 to 2^63-1, got -1" in one_error_line(err)
    assert not (tmp_path / "runs").exists()


def test_a_run_recorded_with_a_negative_seed_is_refused_by_report_check_and_attack(done_run, capsys):
    runs, run_dir = done_run
    config = json.loads((run_dir / "config.json").read_text())
    config["run"]["seed"] = -1
    (run_dir / "config.json").write_text(json.dumps(config))
    for command in (["report"], ["attack", "--attacks", "fgsm"], ["metrics"], ["baseline", "--save", "b.json"]):
        code, _, err = cli(capsys, command[0], "--runs", runs, *command[1:])
        assert code == 2 and "run.seed: a seed is a whole number" in one_error_line(err), command


# ----- provenance --------------------------------------------------------------------------------

def test_provenance_spans_the_runs_training_and_evaluation(tmp_path, tiny_suite, monkeypatch):
    evaluate = trainer.evaluate_run

    def slow_evaluation(*args, **kwargs):   # an evaluation that takes measurably long
        time.sleep(2.5)
        return evaluate(*args, **kwargs)
    monkeypatch.setattr(trainer, "evaluate_run", slow_evaluation)
    suite = tiny_suite(epochs=2)
    spec = RunSpec(suite.name, "NoPen", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path).status == "done"
    run_dir = spec.directory(tmp_path)
    prov = json.loads((run_dir / "provenance.json").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    from datetime import datetime
    span = (datetime.fromisoformat(prov["finished"]) - datetime.fromisoformat(prov["started"])).total_seconds()
    assert result["wall_s"] > 2.5
    assert span >= result["wall_s"] - 1   # times are kept to the second


# ----- your own image folder ----------------------------------------------------------------------

CLASSES = ("circle", "square", "stripe")


def write_grey_folder(root, size=8, train=12, test=4):
    """A 3-class folder of grey PNGs whose class is the brightness band (so it can be learnt)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((size, size)) * 60 + 90 * k).astype(np.uint8)
                Image.fromarray(pixels, "L").save(root / split / name / f"{i}.png")
    return root


def test_a_grey_image_folder_runs_end_to_end_as_a_suite_named_after_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LPC_BENCH_CACHE", str(tmp_path / "cache"))
    data = write_grey_folder(tmp_path / "my-letters")
    runs = tmp_path / "runs"
    code, out, err = cli(capsys, "run", "--suite", "imagefolder", "--data-root", data, "--runs", runs,
                         "--plugins", "LPC", "NoPen", "--set", "recipe.epochs=2",
                         "--set", "evaluation.evaluators=[deepfool, geometry]")
    assert code == 0, err
    board = runs / "leaderboards" / "my-letters.md"
    assert f"leaderboard: {board}" in out and (runs / "my-letters" / "LPC").is_dir()
    text = board.read_text()
    assert text.startswith("# Leaderboard: `my-letters`")
    assert (f"image folder `my-letters` ({data}): 3 classes (circle, square, stripe); 1×8×8 grey images; "
            f"33 train / 3 validation (a stratified 0.1 of train/) / 12 test images; augmentation: none") in text
    setup = text.split("## Setup", 1)[1].split("\n## ", 1)[0]   # the claims may quote the paper's CIFAR figures
    assert "CIFAR" not in setup and "6,000" not in setup and "augment=none" in setup
    config = json.loads(next(runs.rglob("config.json")).read_text())
    assert config["suite"]["recipe"]["augment"] == "none" and config["run"]["suite"] == "my-letters"
    # the report and status find it by that name; the template's name alone is one error line
    assert cli(capsys, "report", "--runs", runs, "--suite", "my-letters")[0] == 0
    code, _, err = cli(capsys, "report", "--runs", runs, "--suite", "imagefolder")
    assert code == 2 and "pass that name as --suite" in one_error_line(err)
    code, _, err = cli(capsys, "run", "--suite", "imagefolder", "--runs", runs)
    assert code == 2 and "needs --data-root DIR" in one_error_line(err)


def test_crop_augmentation_crops_like_a_naive_loop_and_never_flips():
    from bench.data.loader import DeviceLoader, draw_crop_flip
    x = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8)
    y = torch.arange(10)
    loader = DeviceLoader(x, y, 10, pixel_scale=255.0, augment="crop", padding=2)
    loader.set_seed(3)
    (xb, yb), = list(loader.batches())
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(yb, torch.arange(10))
    dy, dx, _ = draw_crop_flip(10, 2, gen, "cpu")
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    expected = torch.stack([padded[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6] for i in range(10)]).float() / 255
    assert torch.equal(xb, expected)
    flipped = DeviceLoader(x, y, 10, pixel_scale=255.0, augment="crop_flip", padding=2)
    flipped.set_seed(3)
    assert not torch.equal(next(iter(flipped))[0], expected)   # the same crops, some mirrored


# ----- the paper suites at smoke scale ---------------------------------------------------------------

def test_smoke_keeps_every_stage_at_a_few_steps():
    from bench.suites import load_suite
    full = load_suite("cifar10")
    smoke = load_suite("cifar10", smoke=True)
    assert smoke.name == "cifar10-smoke" and smoke.seeds == (0,) and smoke.lrs == (1e-4,)
    assert (smoke.recipe.epochs, smoke.recipe.epoch_steps, smoke.recipe.checkpoint_every) == (2, 3, 1)
    assert (smoke.dataset.limit_train, smoke.dataset.limit_test, smoke.evaluation.subset_size) == (1000, 200, 50)
    assert smoke.plugins == full.plugins and smoke.evaluation.evaluators == full.evaluation.evaluators
    assert smoke.backbone == full.backbone and smoke.recipe.augment == full.recipe.augment
    assert smoke.paper_differences[0].startswith("SMOKE RUN (bench run --smoke)")


def test_a_smoke_run_says_so_in_its_leaderboard(tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = cli(capsys, "run", "--suite", "digits", "--smoke", "--plugins", "NoPen", "--runs", runs,
                         "--set", "evaluation.evaluators=[deepfool]")
    assert code == 0, err
    text = (runs / "leaderboards" / "digits-smoke.md").read_text()
    assert "  - SMOKE RUN (bench run --smoke): suite digits at a few minutes' scale" in text
    assert "its numbers say nothing about the plugins" in text


def test_cifar_not_found_on_an_image_folder_names_the_image_folder_option(tmp_path, capsys):
    data = write_grey_folder(tmp_path / "jpegs", train=1, test=1)
    code, _, err = cli(capsys, "run", "--suite", "cifar10", "--data-root", data, "--runs", tmp_path / "runs")
    line = one_error_line(err)
    assert code == 2 and "CIFAR-10 not found" in line
    assert "looks like an image folder" in line and "--set dataset.name=imagefolder" in line


# ----- --help and bench list -----------------------------------------------------------------------

def test_quiet_means_what_the_readme_says_in_every_command():
    readme = (REPO / "README.md").read_text()
    assert "`--quiet`\n(on `run`, `attack`, `metrics`) prints nothing on stdout" in readme
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("run", "attack", "metrics"):
        (action,) = [a for a in commands[name]._actions if "--quiet" in a.option_strings]
        assert action.help.startswith("nothing on stdout"), (name, action.help)


@pytest.mark.parametrize("section", ["suites", "plugins", "datasets", "backbones", "attacks", "metrics"])
def test_bench_list_describes_every_entry(section, capsys):
    assert main(["list", section]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines and all(len(line.split(None, 1)) == 2 and "(no description" not in line for line in lines), lines
