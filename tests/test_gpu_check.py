"""benchmarks/gpu_check.py: the CPU smoke run end to end, and its bad-input line.

The smoke run is the script's whole path (every section, each in its own process, at tiny
sizes on the CPU), so CI catches a GPU check that rotted before a device lease finds it.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, cli_env

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
SECTIONS = ["environment", "correctness", "throughput", "real_run", "attacks"]


def gpu_check(*args: str, env: dict | None = None, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done = gpu_check("--smoke", "--out", str(out))   # its own budget: 300 s on a loaded machine
    return out, done


def test_smoke_run_records_every_section(smoke):
    out, done = smoke
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "smoke" and list(report["sections"]) == SECTIONS
    for name, section in report["sections"].items():
        # figures, or a recorded error or skip: never an empty section
        assert section["status"] in ("ok", "skipped"), (name, section["errors"])
        assert section["figures"] or section["errors"] or section.get("reason"), name
        assert section["wall_s"] <= section["cap_s"] + 5, name
    markdown = (out / "gpu_check.md").read_text()
    for name, section in report["sections"].items():
        assert f"## {section['title']}: {section['status']}" in markdown


def test_smoke_figures_are_the_real_measurements(smoke):
    out, _ = smoke
    s = json.loads((out / "gpu_check.json").read_text())["sections"]
    env = s["environment"]["figures"]
    assert env["environment"]["device"] == "cpu" and env["bf16_matmul"]["tflops"] > 0
    tests = s["correctness"]["figures"]["pytest_cuda"]
    # the cuda tests ran on the CPU stand-in, but for the two that take minutes there
    assert set(tests["counts"]) == {"passed"} and tests["counts"]["passed"] >= 6 and tests["exit_code"] == 0
    assert all(k.startswith("tests/test_cuda.py::") for k in tests["tests"])
    tp = s["throughput"]["figures"]
    for model in ("resnet18", "resnet50"):
        assert set(tp[model]["modes"]) == {"fp32", "bf16_channels_last", "bf16_channels_last_compile"}
        assert all(m["img_per_s"] > 0 and m["ratio_to_anchor_measured_peak"] > 0 for m in tp[model]["modes"].values())
        assert tp[model]["pipelines"]["ratio_dataloader_over_device"] > 0
        # the smoke run puts a tiny CNN in each ResNet's place, and says so
        assert tp[model]["backbone"].startswith("small_cnn") and tp[model]["gmac_per_image"] > 0
    assert tp["resnet18"]["num_classes"] == 10 and tp["resnet50"]["num_classes"] == 100
    run = s["real_run"]["figures"]
    assert run["bench_run"]["exit_code"] == 0 and set(run["bench_run"]["runs"]) == {"LPC", "NoPen"}
    assert all(r["status"] == "done" and "deepfool" in r["evaluations"] for r in run["bench_run"]["runs"].values())
    assert run["bench_report"]["exit_code"] == 0 and (out / "leaderboard-cifar10-small.md").exists()
    assert run["paper_estimate"]["exit_code"] == 0
    attacks = s["attacks"]["figures"]
    for model in ("cnn32", "resnet18"):
        r = attacks[model]
        assert set(r["methods"]) == {"ours", "foolbox", "torchattacks"}
        assert r["speedup_vs_foolbox"] > 0 and r["ours_vs_foolbox"]["n_inputs"] == r["n_inputs"]
    # the small CNN is trained enough that the per-input agreement has inputs to compare
    assert attacks["cnn32"]["ours_vs_foolbox"]["n_both_flipped"] > 0
    assert "autoattack" in attacks or "autoattack" in s["attacks"]["skipped"]


def test_without_a_gpu_and_without_smoke_it_says_so_in_one_line(tmp_path):
    env = cli_env()
    env["CUDA_VISIBLE_DEVICES"] = ""   # no GPU, even on a machine that has one
    done = gpu_check("--out", str(tmp_path / "out"), env=env, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--smoke" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_missing_data_folder_skips_the_real_run_with_the_reason(tmp_path):
    """Without --smoke the real run reads --data-root; the section alone is recorded as
    skipped (run here in the section's own mode, as the orchestrator starts it)."""
    import time
    out = tmp_path / "out"
    done = gpu_check("--out", str(out), "--section", "real_run", "--deadline", str(time.time() + 60),
                     "--data-root", str(tmp_path / "nowhere"), timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "work" / "sections" / "real_run.json").read_text())
    assert "no data folder" in data["skip_reason"] and str(tmp_path / "nowhere") in data["skip_reason"]
    from gpu_check import section_status  # noqa: E402
    assert section_status(data, 0) == "skipped"


def test_flops_per_image_matches_a_count_of_every_layer():
    """The throughput anchor's FLOPs: torch's counter against multiply-adds counted layer by
    layer (a forward hook on every convolution and linear map). Training costs about three
    forwards: the forward, then the gradients of the inputs and of the weights (the first
    convolution's input gradient is not needed). ResNet-18 at 32×32: ≈ 1.66 G multiply-adds,
    the issue's "≈ 1.7 GFLOP" anchor."""
    import torch
    from bench_pipeline import flops_per_image, fresh_model, pipeline_suite, synthetic
    suite, data = pipeline_suite("cifar10", "resnet18"), synthetic(2)
    model, _ = fresh_model(suite, data, torch.device("cpu"), channels_last=False)
    macs = {}

    def hook(module, inputs, output):
        per_output = (module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                      if isinstance(module, torch.nn.Conv2d) else module.in_features)
        macs[module] = output.numel() // output.shape[0] * per_output
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(data.train_x[:1].float() / 255)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    expected_macs = 3 * sum(macs.values()) - macs[first]
    assert flops_per_image(suite, data, torch.device("cpu")) == pytest.approx(2 * expected_macs, rel=1e-6)
    assert 1.6e9 < expected_macs < 1.75e9


def test_pytest_output_is_parsed_outcome_by_outcome(tmp_path):
    """Real pytest output (one pass, one failure, one skip) through the correctness section's parser."""
    from gpu_check import parse_pytest
    (tmp_path / "test_sample.py").write_text(
        "import time, pytest\n"
        "def test_ok():\n    time.sleep(0.6)\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "def test_later():\n    pytest.skip('needs a CUDA device')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider",
                           "--durations=0", "--durations-min=0.5", "test_sample.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    parsed = parse_pytest(done.stdout)
    assert parsed["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    tests = parsed["tests"]
    assert tests["test_sample.py::test_ok"]["outcome"] == "passed"
    assert tests["test_sample.py::test_ok"]["duration_s"] >= 0.5
    assert "one is not two" in tests["test_sample.py::test_bad"]["message"]
    assert parsed["skip_reasons"] == ["needs a CUDA device"]


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (killed, not yet reaped by whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return True


def test_a_section_over_its_cap_is_killed_with_everything_it_started(tmp_path):
    """The cap: the section's process and its own subprocesses (pytest, bench run) go at once."""
    import time
    from gpu_check import run_process, section_status
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    started = time.monotonic()
    code, wall = run_process([sys.executable, "-c", script], log=tmp_path / "log", timeout=3)
    assert code is None and 3 <= wall < 10 and time.monotonic() - started < 10
    grandchild = int((tmp_path / "log").read_text().split()[0])
    deadline = time.monotonic() + 10
    while not _gone(grandchild):
        assert time.monotonic() < deadline, "the section's subprocess outlived the cap"
        time.sleep(0.1)
    assert section_status({"figures": {"a": 1}}, code) == "timeout"
