"""``bench evaluate`` / ``bench.evaluate()``: a model the harness did not train, through the
trainer's own evaluation entry point.

* a model trained by a standalone loop here, saved as a torch.export ``.pt2``, as TorchScript
  and as ``module:factory`` + state dict, gives the same numbers in all three forms, and the
  same as the evaluation the trainer runs (``evaluation_context`` + ``run_evaluators``) on the
  model object itself;
* a harness-trained digits run, exported to ``.pt2`` and evaluated, equals ``bench attack`` on
  its run folder, number for number;
* each bad input is one ``error:`` line, exit 2, and no run folder;
* the run folder carries provenance (the file's sha256 and size) and the report marks its row.
"""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cli.main import main
from conftest import TIMING_KEYS, without_timing

# a small protocol: every kind of evaluator (min-norm, fixed-budget, best-known, reliability,
# collapse under attack, a latent metric), on 40 test inputs
QUICK = ["--set", "evaluation.evaluators=[deepfool,attacks,best_known,reliability,attack_collapse,geometry]",
         "--set", "evaluation.settings.attacks.methods=[pgd-l2,fgsm,ddn-l2]",
         "--set", "evaluation.settings.attacks.params={}", "--set", "evaluation.subset_size=40"]

MODEL_PY = textwrap.dedent('''
    import torch
    from torch import nn

    def factory():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))

    def five_classes():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))

    class _NaN(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("nan"))

    def nan_logits():
        return _NaN()

    def probabilities():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))

    class _Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)
        def forward(self, x):
            return self.fc(nn.functional.dropout(x.flatten(1), 0.5, training=True))

    def noisy():
        return _Noisy()

    def wrong_shape():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def untrained():
        torch.manual_seed(3)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid(), nn.Linear(10, 10))
''')


def strip_timing(data):
    if isinstance(data, dict):
        return {k: strip_timing(v) for k, v in data.items() if k not in TIMING_KEYS}
    if isinstance(data, list):
        return [strip_timing(v) for v in data]
    return data


def result_of(runs: Path, name: str, suite: str = "digits") -> dict:
    return json.loads((runs / suite / name / "seed0-lr0" / "result.json").read_text())


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """A digits MLP trained by a standalone loop, saved in the three forms."""
    from bench.suites import load_suite
    from bench.training.trainer import get_data
    root = tmp_path_factory.mktemp("user_model")
    (root / "usermodel.py").write_text(MODEL_PY)
    scope: dict = {}
    exec(compile(MODEL_PY, "usermodel.py", "exec"), scope)
    data = get_data(load_suite("digits"))
    x, y = data.train_x.float() / data.pixel_scale, data.train_y
    model = scope["factory"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    torch.save(model.state_dict(), root / "weights.pt")
    program = torch.export.export(model, (x[:8],), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, root / "model.pt2")
    torch.jit.save(torch.jit.script(model), root / "model.ts")
    return root, model


def test_three_file_forms_and_the_trainers_evaluation_give_the_same_numbers(user_model, tmp_path, monkeypatch):
    from bench.evaluation.hook import run_evaluators
    from bench.suites import load_suite
    from bench.training.evaluate import EvalData, LatentProbe, evaluation_context, result_record
    from bench.training.trainer import get_data
    root, model = user_model
    monkeypatch.syspath_prepend(str(root))
    runs = tmp_path / "runs"
    forms = {"pt2": [str(root / "model.pt2")],
             "factory": ["usermodel:factory", "--weights", str(root / "weights.pt")],
             "file-factory": [f"{root / 'usermodel.py'}:factory", "--weights", str(root / "weights.pt")]}
    for name, model_args in forms.items():
        assert main(["evaluate", "--model", *model_args, "--name", name, "--runs", str(runs), "--latent-layer", "2",
                     "--quiet", *QUICK]) == 0
    # TorchScript cannot be hooked: its latent metrics are skipped, and say so
    assert main(["evaluate", "--model", str(root / "model.ts"), "--name", "ts", "--runs", str(runs),
                 "--quiet", *QUICK]) == 0
    got = {name: strip_timing(result_of(runs, name)) for name in (*forms, "ts")}
    for r in got.values():
        r.pop("plugin")
    assert got["pt2"] == got["factory"] == got["file-factory"]
    assert set(got["ts"]["skipped"]) == {"attack_collapse", "geometry"}
    for name in ("deepfool", "attacks", "best_known", "reliability"):
        assert got["ts"]["evaluations"][name] == got["pt2"]["evaluations"][name]
    assert got["pt2"]["origin"] == "evaluated" and got["pt2"]["checks"]["deterministic"] is True

    # the trainer's evaluation (its one entry point) of the model object itself
    suite = load_suite("digits", QUICK[1::2])
    ctx, accuracy = evaluation_context(
        LatentProbe(model, "2"), EvalData.from_splits(get_data(suite)), subset_size=40, subset_seed=0,
        device=torch.device("cpu"), batch_size=suite.recipe.eval_batch_size, latent_name="2", num_classes=10)
    direct = result_record(ctx, accuracy, run_evaluators(ctx, suite.evaluation.evaluators,
                                                         suite.evaluation.settings))
    assert strip_timing(direct["evaluations"]) == got["pt2"]["evaluations"]
    assert direct["test_acc"] == got["pt2"]["test_acc"] and direct["latent"] == got["pt2"]["latent"]


def test_the_run_folder_has_provenance_and_the_report_marks_the_row(user_model, tmp_path):
    root, _ = user_model
    runs = tmp_path / "runs"
    assert main(["evaluate", "--model", str(root / "model.pt2"), "--name", "mine", "--runs", str(runs),
                 "--quiet", "--evaluators", "deepfool"]) == 0
    run_dir = runs / "digits" / "mine" / "seed0-lr0"
    prov = json.loads((run_dir / "provenance.json").read_text())
    blob = (root / "model.pt2").read_bytes()
    assert prov["model"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert prov["model"]["size_bytes"] == len(blob) and prov["model"]["format"] == "torch.export"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["evaluated"]["evaluators"] == ["deepfool"] and config["evaluated"]["subset_size"] == 360
    assert main(["report", "--runs", str(runs), "--suite", "digits"]) == 0
    board = (runs / "leaderboards" / "digits.md").read_text()
    assert "| mine (evaluated) |" in board and "(evaluated): a model trained elsewhere" in board


def test_a_harness_trained_run_evaluated_equals_bench_attack_on_its_folder(tmp_path, capsys):
    """Export a trained Classifier to .pt2; `bench evaluate` of it == `bench attack` of its folder."""
    from bench.training.trainer import load_trained_run
    runs = tmp_path / "runs"
    sets = ["--set", "recipe.epochs=3", *QUICK]
    assert main(["run", "--plugins", "NoPen", "--seeds", "0", "--runs", str(runs), "--quiet", "--no-report",
                 *sets]) == 0
    run_dir = next((runs / "digits" / "NoPen").iterdir())
    assert main(["attack", "--runs", str(run_dir), "--quiet"]) == 0   # rerun, merged into result.json
    attacked = json.loads((run_dir / "result.json").read_text())
    suite, _, model, data, _ = load_trained_run(run_dir)
    x = data.test_x[:8].float() / data.pixel_scale
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, tmp_path / "nopen.pt2")
    # NoPen has no penultimate layer: its latent is h, the backbone's output
    assert main(["evaluate", "--model", str(tmp_path / "nopen.pt2"), "--name", "nopen-file", "--runs",
                 str(tmp_path / "evaluated"), "--latent-layer", "backbone", "--classifier-layer", "head.classifier", "--quiet", *sets]) == 0
    evaluated = result_of(tmp_path / "evaluated", "nopen-file")
    for name in ("attack_collapse", "geometry"):   # the latent's label: the module's name, the trainer's "h"
        assert evaluated["evaluations"][name].pop("latent") == "backbone"
        assert attacked["evaluations"][name].pop("latent") == "h"
    assert strip_timing(evaluated["evaluations"]) == strip_timing(attacked["evaluations"])
    for key in ("train_acc", "val_acc", "test_acc"):
        assert evaluated[key] == attacked[key]
    assert evaluated["latent"]["dim"] == attacked["latent"]["dim"]
    # and `bench attack` over a tree holding both skips the evaluated row (it has no checkpoint)
    import shutil
    shutil.copytree(runs / "digits" / "NoPen", tmp_path / "evaluated" / "digits" / "NoPen")
    capsys.readouterr()
    assert main(["attack", "--runs", str(tmp_path / "evaluated"), "--attacks", "deepfool"]) == 0
    assert "attacked 1 run(s)" in capsys.readouterr().out
    # the report over trained and evaluated rows together: the leaderboard says which is which
    assert main(["report", "--runs", str(tmp_path / "evaluated"), "--suite", "digits"]) == 0
    board = (tmp_path / "evaluated" / "leaderboards" / "digits.md").read_text()
    assert "| nopen-file (evaluated) |" in board and "| NoPen |" in board


def _bad(args: list[str], tmp_path: Path, capsys, want: str) -> None:
    runs = tmp_path / "runs"
    capsys.readouterr()
    code = main(["evaluate", "--model", *args, "--name", "bad", "--runs", str(runs), "--quiet", *QUICK])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and want in err[0], err
    assert not runs.exists() or not any(runs.rglob("*.json")), "a half-written run folder"


def test_bad_inputs_give_one_error_line_and_no_run_folder(user_model, tmp_path, capsys, monkeypatch):
    root, _ = user_model
    monkeypatch.syspath_prepend(str(root))
    weights = ["--weights", str(root / "weights.pt")]
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    pickle = tmp_path / "pickle.pt"
    torch.save({"w": torch.zeros(1), "when": __import__("datetime").date(2026, 1, 1)}, pickle)
    cases = [
        ([str(tmp_path / "missing.pt2")], "no such file"),
        ([str(not_a_model)], "neither a torch.export program"),
        (["usermodel:factory", "--weights", str(pickle)], "weights_only"),
        (["usermodel:factory", "--weights", str(tmp_path / "nothere.pt")], "no such file"),
        (["usermodel:five_classes", *weights], "does not fit"),
        (["usermodel:five_classes"], "returns 5 outputs; the suite's dataset has 10 classes"),
        (["usermodel:nan_logits"], "non-finite"),
        (["usermodel:probabilities"], "probabilities"),
        (["usermodel:noisy"], "not deterministic"),
        (["usermodel:wrong_shape"], "does not take the suite's inputs"),
        (["usermodel:untrained"], "at chance"),
        (["usermodel:no_such_factory"], "has no callable 'no_such_factory'"),
        (["no_such_module_xyz:factory"], "cannot import"),
        ([str(root / "model.pt2"), *weights], "--weights goes with"),
        ([str(root / "model.pt2"), "--latent-layer", "fc9"], "no module 'fc9' in the model; its modules: 0, 1, 2, 3"),
        ([str(root / "model.ts"), "--latent-layer", "2"], "TorchScript module cannot be hooked"),
    ]
    for args, want in cases:
        _bad(args, tmp_path, capsys, want)


def test_a_fixed_batch_export_is_refused_before_any_attack(user_model, tmp_path, capsys):
    _, model = user_model
    fixed = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(4, 1, 8, 8),)), fixed)
    _bad([str(fixed)], tmp_path, capsys, "dynamic batch dimension")


def test_python_api_with_tensors_and_a_callable_latent(user_model):
    from bench import evaluate
    from bench.suites import load_suite
    from bench.training.trainer import get_data
    _, model = user_model
    data = get_data(load_suite("digits"))
    x, y = data.test_x.float() / data.pixel_scale, data.test_y
    result = evaluate(model, "digits", data=(x, y), evaluators=["deepfool", "geometry"],
                      latent=lambda t: model[:3](t))
    assert result["origin"] == "evaluated" and result["train_acc"] is None
    assert result["test_acc"] == float((model(x).argmax(1) == y).float().mean())
    assert "deepfool" in result["evaluations"] and "training split" in result["skipped"]["geometry"]
    from bench.core.errors import BenchError
    with pytest.raises(BenchError, match="inputs must lie in"):
        evaluate(model, "digits", data=(x * 2, y))


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path):
    """README, "Evaluate your own model": its Python block, then its two commands, in a fresh folder."""
    import os
    import shlex
    from conftest import REPO, run_cli
    section = (REPO / "README.md").read_text().split("## Evaluate your own model", 1)[1].split("\n## ", 1)[0]
    python_block = section.split("```python", 1)[1].split("```", 1)[0]
    commands = [line for line in section.split("```bash", 1)[1].split("```", 1)[0].splitlines() if line.strip()]
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(python_block, "README.md (evaluate example)", "exec"), {})
    finally:
        os.chdir(here)
    assert (tmp_path / "my-mlp.pt2").exists()
    for command in commands:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "bench"]
        done = run_cli(argv[3:], tmp_path)
        assert done.returncode == 0, done.stderr
    result = result_of(tmp_path / "runs", "my-mlp")
    assert result["origin"] == "evaluated" and result["test_acc"] > 0.9 and not result.get("skipped")
    assert "| my-mlp (evaluated) |" in (tmp_path / "runs" / "leaderboards" / "digits.md").read_text()


def test_a_channels_last_conv_net_is_attacked_like_a_contiguous_one():
    # a CUDA run trains in channels_last; the H200 check found torchattacks' PGDL2 failing on
    # its input gradients (`.view` of a channels_last tensor). Same numbers in either layout.
    from bench import evaluate
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 10))
    x, y = torch.rand(24, 3, 8, 8), torch.arange(24) % 10
    y = torch.where(torch.arange(24) < 14, net(x).argmax(1).detach(), y)   # most correct, all 10 classes
    sets = ["dataset.name=imagefolder", "evaluation.subset_size=24",
            "evaluation.settings.attacks.methods=[pgd-l2]", "evaluation.settings.attacks.params={}"]
    plain = evaluate(net, "cifar10-small", data=(x, y), evaluators=["attacks"], overrides=sets, device="cpu")
    channels_last = evaluate(net.to(memory_format=torch.channels_last), "cifar10-small", data=(x, y),
                             evaluators=["attacks"], overrides=sets, device="cpu")
    assert without_timing(channels_last["evaluations"]) == without_timing(plain["evaluations"])
