"""The CUDA path: what only a GPU can break, each compared with the CPU or an oracle.

Every test here is marked ``cuda`` (``python -m pytest -m cuda`` runs only these; the GPU
check, benchmarks/gpu_check.py, runs them and records the outcome). Without a CUDA device
they skip. ``LPC_BENCH_CUDA_TESTS_DEVICE=cpu`` runs them on the CPU instead: that checks
the tests themselves, but their device-against-CPU comparisons then compare the CPU
with itself and prove nothing about CUDA.

What they cover: the on-device uint8 crop/flip pipeline; the head, the LPC penalty and
every plugin's loss terms in float32 under bf16 autocast; DeepFool's vmapped Jacobian
rows against the CPU's per-class backward passes; LPC trained at γ = 1e6 under bf16
autocast; ``--compile``; a ``--deterministic`` run killed with SIGKILL and resumed, bitwise
equal to an uninterrupted one.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, kill_at_first_checkpoint, leftover_temporaries, read_run, run_cli, start_cli

sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_check import write_image_folder  # noqa: E402

pytestmark = pytest.mark.cuda

DEVICE_ENV = "LPC_BENCH_CUDA_TESTS_DEVICE"


@pytest.fixture(scope="module")
def device() -> torch.device:
    forced = os.environ.get(DEVICE_ENV)
    if forced:
        return torch.device(forced)
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """10 classes of 32×32 RGB JPEGs (24 train, 4 test per class); a private decode cache."""
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "data", train_per_class=24, test_per_class=4)
    before = os.environ.get("LPC_BENCH_CACHE")
    os.environ["LPC_BENCH_CACHE"] = str(root / "cache")   # read by this process and its CLI children
    yield root / "data"
    if before is None:
        os.environ.pop("LPC_BENCH_CACHE", None)
    else:
        os.environ["LPC_BENCH_CACHE"] = before


def small_suite(data_root: Path, device: torch.device, *overrides: str):
    """cifar10-small on the tiny image folder: a 8-16-16 CNN, no evaluators."""
    from bench.suites import load_suite
    return load_suite("cifar10-small", [
        f"dataset.root={data_root}", f"runtime.device={device}", "backbone.channels=[8,16,16]",
        "evaluation.evaluators=[]", "evaluation.settings={}", "recipe.batch_size=32", "recipe.log_every=1",
        *overrides])


# ----- the on-device uint8 pipeline -----------------------------------------------------

def test_crop_flip_on_device_equals_cpu(device):
    from bench.data.loader import crop_flip, draw_crop_flip
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dy, dx, flip = draw_crop_flip(64, 4, torch.Generator().manual_seed(1), "cpu")
    want = crop_flip(x, 4, dy, dx, flip)
    for channels_last in (False, True):
        got = crop_flip(x.to(device), 4, dy.to(device), dx.to(device), flip.to(device), channels_last=channels_last)
        assert got.device.type == device.type and got.dtype == torch.uint8
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        assert torch.equal(got.cpu(), want)


def test_device_loader_replays_from_its_generator(device):
    """Batches drawn on the device equal the CPU crop/flip of the same draws; same seed, same batches."""
    from bench.data.loader import DeviceLoader, crop_flip, draw_crop_flip
    x = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(100) % 10
    loader = DeviceLoader(x, y, 32, pixel_scale=255.0, device=device, shuffle=True, augment="crop_flip",
                          padding=4, channels_last=True)
    loader.set_seed(5)
    first = [(xb.cpu(), yb.cpu(), xb.is_contiguous(memory_format=torch.channels_last)) for xb, yb in loader]
    g = torch.Generator(device=device)
    g.manual_seed(5)
    order = torch.randperm(100, generator=g, device=device).cpu()
    for i, (xb, yb, cl) in enumerate(first):
        idx = order[i * 32:(i + 1) * 32]
        dy, dx, flip = draw_crop_flip(idx.numel(), 4, g, device)
        expected = crop_flip(x[idx], 4, dy.cpu(), dx.cpu(), flip.cpu()).float() / 255
        assert cl and xb.dtype == torch.float32
        assert torch.equal(yb, y[idx])
        # the crop itself is exact; CUDA divides by a scalar as a multiplication by its
        # reciprocal, which can differ from the CPU's true division in the last bit
        assert torch.equal((xb * 255).round().to(torch.uint8), crop_flip(x[idx], 4, dy.cpu(), dx.cpu(), flip.cpu()))
        torch.testing.assert_close(xb, expected, rtol=2e-7, atol=0)
    loader.set_seed(5)
    assert all(torch.equal(a[0], b.cpu()) for a, (b, _) in zip(first, loader))


# ----- float32 where it matters under bf16 autocast --------------------------------------

def test_head_penalty_and_losses_are_float32_under_bf16_autocast(device):
    """Every plugin: the backbone runs in bf16, the head, its logits, latent and every loss
    term in float32; LPC's penalty equals γ·mean‖z‖² recomputed in float64 from the latent."""
    from bench.config.schema import BackboneConfig
    from bench.core.device import autocast
    from bench.models.backbones import create_backbone
    from bench.models.classifier import Classifier
    from registry import create_plugin, list_plugins
    from lpc import latent_penalty
    widths = {"narrow": 16, "intermediate": 64, "wide": 128}
    x = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(3)).to(device)
    y = (torch.arange(32) % 10).to(device)
    for name in list_plugins():
        torch.manual_seed(0)
        backbone = create_backbone(BackboneConfig(name="small_cnn", channels=(8, 16, 16)), (3, 32, 32))
        model = Classifier(backbone, create_plugin(name, backbone.feature_dim, 10, widths), [0.5] * 3, [0.25] * 3)
        model = model.to(device).to(memory_format=torch.channels_last).train()
        # a gradient-penalty plugin differentiates the loss with respect to the input
        xin = x.detach().clone().requires_grad_(bool(getattr(model.head, "input_grad", False)))
        with autocast(device, "bf16"):
            h = model.backbone((x - model.mean) / model.std)
            out = model.forward_all(xin)
        assert h.dtype == torch.bfloat16, f"{name}: autocast is not active ({h.dtype})"
        assert out.logits.dtype == out.latent.dtype == torch.float32, name
        # the head ran in float32 on the bf16 features: the same as running it outside autocast
        ref = model.head(out.features.float())
        assert torch.equal(ref.logits, out.logits) and torch.equal(ref.latent, out.latent), name
        # an input-side plugin (adversarial training, gradient penalty) also sees the batch
        from registry.base import Batch
        batch = Batch(x=xin, y=y, model=model, autocast=lambda: autocast(device, "bf16"))
        terms = model.head.loss(out, y, batch) if model.head.uses_input() else model.head.loss(out, y)
        for term, value in terms.items():
            assert value.dtype == torch.float32 and torch.isfinite(value), f"{name}.{term}: {value}"
    # the LPC penalty on a collapsing latent (‖z‖ ~ 1e-3, below bf16's resolution next to 1)
    z = (1e-3 * torch.randn(256, 16, generator=torch.Generator().manual_seed(4))).to(device)
    with autocast(device, "bf16"):
        value = latent_penalty(z, 1e6)
    exact = 1e6 * z.double().pow(2).sum(1).mean()
    assert value.dtype == torch.float32 and abs(float(value) - float(exact)) <= 1e-5 * float(exact)


def test_lpc_at_gamma_1e6_trains_without_nan(device, image_folder, tmp_path):
    """LPC with γ fixed at the paper's cap, 1e6, from the first step, under bf16 autocast:
    every loss term stays finite, the run completes, and the penalty falls each epoch."""
    from bench.runs.folder import RunSpec
    from bench.training.trainer import load_trained_run, predict, train_run
    suite = small_suite(image_folder, device, "recipe.epochs=3", "plugin_params.LPC.gamma.start=1e6", "plugin_params.LPC.gamma.cap=1e6",
                        "runtime.amp=bf16")
    spec = RunSpec(suite.name, "LPC", 0, suite.lrs[0])
    outcome = train_run(suite, spec, tmp_path)
    assert outcome.status == "done", outcome.result
    rows = [json.loads(line) for line in (spec.directory(tmp_path) / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["gamma"] == pytest.approx(1e6)
        losses = {k: v for k, v in row.items() if k.startswith("loss_")}
        assert {"loss_ce", "loss_penalty"} <= set(losses)
        assert all(math.isfinite(v) for v in losses.values()), row
    _, _, model, data, _ = load_trained_run(spec.directory(tmp_path), device)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    latents, _ = predict(model, data.test_x, data.pixel_scale, device, 256, "bf16")
    assert torch.isfinite(latents).all()
    # the penalty dominates the loss and drives z toward 0, epoch after epoch
    penalties = [row["loss_penalty"] for row in rows]
    assert penalties[0] > penalties[1] > penalties[2] and penalties[2] > 10 * rows[2]["loss_ce"], penalties


# ----- DeepFool: vmapped Jacobian rows on the device against per-class backwards on CPU --

def _deepfool_pair(model, x, y, device):
    from bench.attacks.deepfool import deepfool
    on_cpu = deepfool(model, x, y, batched_jacobian=False, device="cpu")
    on_dev = deepfool(copy.deepcopy(model).to(device), x, y, batched_jacobian=True, device=device)
    return on_cpu, on_dev


def _assert_same_deepfool(a, b, rel_tol: float) -> None:
    assert a.status == b.status
    both = a.flipped & b.flipped
    assert both.sum() >= 0.8 * len(a.status)
    rel = (a.rho[both] - b.rho[both]).abs() / a.rho[both]
    assert rel.max() <= rel_tol, f"max relative ρ difference {rel.max():.2e}"
    assert torch.equal(a.clean_pred, b.clean_pred) and torch.equal(a.final_pred, b.final_pred)


def test_deepfool_on_device_matches_cpu_mlp(device):
    from bench_deepfool import digits_mlp
    torch.set_num_threads(1)
    model, x, y = digits_mlp(120, "cpu", train_steps=150)
    _assert_same_deepfool(*_deepfool_pair(model, x, y, device), rel_tol=1e-4)


def test_deepfool_on_device_matches_cpu_cnn_in_float32(device):
    """A CNN, with cuDNN's TF32 convolutions switched off: DeepFool claims float32 arithmetic.
    (With PyTorch's default, allow_tf32=True, convolutions round to 10-bit mantissas; the
    GPU check's attack section measures how far ρ then moves.)"""
    from bench_deepfool import cnn32
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        model, x, y = cnn32(40, "cpu", train_steps=25, batch=32)
        _assert_same_deepfool(*_deepfool_pair(model, x, y, device), rel_tol=1e-3)
    finally:
        torch.backends.cudnn.allow_tf32 = before


# ----- --deterministic and --compile ----------------------------------------------------

def test_killed_deterministic_run_resumes_bitwise(device, image_folder, tmp_path):
    """``bench run --deterministic`` killed with SIGKILL after its first checkpoint, then run
    again, ends bitwise equal to an uninterrupted run (another process): weights, optimizer
    state, result.json and log.jsonl (timings aside)."""
    epochs = 60 if device.type == "cuda" else 12
    args = ["run", "--suite", "cifar10-small", "--data-root", str(image_folder), "--plugins", "LPC",
            "--device", str(device), "--deterministic", "--quiet", "--no-report",
            *(a for o in ("backbone.channels=[8,16,16]", "evaluation.evaluators=[]", "evaluation.settings={}",
                          "recipe.batch_size=32", f"recipe.epochs={epochs}", "recipe.checkpoint_every=2",
                          "recipe.log_every=1") for a in ("--set", o))]
    victim = start_cli([*args, "--out", "killed"], tmp_path)
    run_dir = kill_at_first_checkpoint(
        victim, tmp_path, lambda: next((p.parent for p in (tmp_path / "killed").rglob("checkpoint.pt")), None))
    assert not (run_dir / "result.json").exists(), "killed too late: the run had finished"
    epochs_done = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]
    assert 2 <= epochs_done < epochs

    reference = run_cli([*args, "--out", "reference"], tmp_path)
    assert reference.returncode == 0, reference.stderr
    resumed = run_cli([*args, "--out", "killed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    ref_dir = tmp_path / "reference" / run_dir.relative_to(tmp_path / "killed")
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["device"].startswith(device.type) and provenance["resumed"][0]["epoch"] == epochs_done
    assert read_run(run_dir) == read_run(ref_dir)
    a = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(ref_dir / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == epochs
    for part in ("model", "optimizer"):
        flat_a, flat_b = _tensors(a[part]), _tensors(b[part])
        assert flat_a.keys() == flat_b.keys()
        for key in flat_a:
            assert flat_a[key].device == flat_b[key].device, f"{part}: {key} on {flat_a[key].device}"
            assert torch.equal(flat_a[key], flat_b[key]), f"{part}: {key}"
    assert leftover_temporaries(tmp_path / "killed") == []


def _tensors(tree, prefix: str = "") -> dict:
    """Every tensor of a nested state dict, keyed by its path."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        path = f"{prefix}/{key}"
        if isinstance(value, torch.Tensor):
            out[path] = value
        else:
            out.update(_tensors(value, path))
    return out


# ----- the positive controls on the device ---------------------------------------------
def test_inner_pgd_on_device_matches_cpu(device):
    """The inner attack in float32 on the device and on the CPU: same model, inputs, start."""
    from torch import nn
    from registry.losses.adversarial import pgd, random_start
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.SiLU(), nn.Linear(64, 10))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    for norm, eps, alpha in (("Linf", 8 / 255, 2 / 255), ("L2", 0.5, 0.1)):
        start = random_start(x, norm, eps, torch.Generator().manual_seed(2))
        cpu = pgd(model, x, y, norm=norm, eps=eps, steps=10, step_size=alpha, start=start)
        dev = pgd(copy.deepcopy(model).to(device), x.to(device), y.to(device), norm=norm, eps=eps, steps=10,
                  step_size=alpha, start=start.to(device)).cpu()
        # a sign step flips where a gradient coordinate is ~0: compare most coordinates, not all
        close = ((cpu - dev).abs() <= 1e-4).float().mean()
        assert close >= 0.99, (norm, float(close))


@pytest.mark.parametrize("plugin", ["PGD-AT", "TRADES", "InputGradNorm", "LPC-PGD-AT"])
def test_controls_train_under_bf16_autocast_and_repeat_exactly(device, image_folder, tmp_path, plugin):
    """Each control trains on the device under the suite's bf16 autocast (inner attack and
    double backprop included) with finite loss terms, and a --deterministic rerun gives the
    same log: the inner attacks' random starts come from the device generator seeded by
    (seed, step)."""
    from bench.runs.folder import RunSpec
    from bench.training.trainer import train_run
    suite = small_suite(image_folder, device, f"plugins=[{plugin}]", "recipe.epochs=2", "runtime.amp=bf16",
                        "runtime.deterministic=true")
    spec = RunSpec(suite.name, plugin, 0, suite.lrs[0])
    logs = []
    for out in ("a", "b"):
        outcome = train_run(suite, spec, tmp_path / out, device=device)
        assert outcome.status == "done", outcome.result
        logs.append([{k: v for k, v in row.items() if k != "time_s"} for row in read_run(spec.directory(tmp_path / out))[1]])
    assert logs[0] == logs[1]
    assert all(math.isfinite(v) for row in logs[0] for k, v in row.items() if k.startswith("loss_"))


# last: the slowest (code generation), so a capped run loses it alone
def test_compile_trains_and_its_checkpoint_loads_uncompiled(device, image_folder, tmp_path):
    """``runtime.compile``: the compiled backbone trains, and the checkpoint (same keys)
    loads into a plain model that reproduces the run's test accuracy."""
    from bench.runs.folder import RunSpec
    from bench.training.trainer import load_trained_run, predict, train_run
    suite = small_suite(image_folder, device, "recipe.epochs=2", "runtime.compile=true")
    spec = RunSpec(suite.name, "LPC", 0, suite.lrs[0])
    outcome = train_run(suite, spec, tmp_path)
    assert outcome.status == "done", outcome.result
    state = torch.load(spec.directory(tmp_path) / "checkpoint.pt", weights_only=True)["model"]
    assert not any("_orig_mod" in key for key in state)
    _, _, model, data, _ = load_trained_run(spec.directory(tmp_path), device)
    _, pred = predict(model, data.test_x, data.pixel_scale, device, 256, suite.runtime.amp)
    accuracy = float((pred == data.test_y).float().mean())
    # compiled kernels round differently from eager ones in bf16: one or two borderline inputs
    assert abs(accuracy - outcome.result["test_acc"]) <= 2 / len(data.test_y) + 1e-9
