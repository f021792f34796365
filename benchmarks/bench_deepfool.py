"""Our batched DeepFool vs foolbox's L2DeepFool (all candidates) vs torchattacks' DeepFool.

    python benchmarks/bench_deepfool.py                       # CPU, 1 thread, both models
    python benchmarks/bench_deepfool.py --device cuda --threads 0 --models cnn32 resnet18

One run, same models, same inputs, same settings (50 steps, overshoot 0.02, all classes):

Each model is trained on the device it is attacked on.

* ``digits-mlp``: the digits suite's MLP (64-256-256, SiLU, NoPen head) trained briefly
  on sklearn digits; the 360 inputs that follow the training images.
* ``cnn32``: bench's ``small_cnn`` backbone (channels 16-32-64) with a NoPen head on
  32×32×3 inputs, trained briefly on a synthetic 10-class task (a smooth random pattern
  per class plus pixel noise); ``--n-cnn`` held-out inputs.
* ``resnet18``: bench's CIFAR ResNet-18 with a NoPen head, trained briefly on the same
  synthetic task; ``--n-cnn`` held-out inputs.

For each method: wall time (median of ``--repeats`` interleaved runs; torchattacks once,
it is slow, and on the first ``--n-torchattacks`` inputs only, so its speed is compared
per input), inputs flipped (re-classified here: correct, then another class after
clamping) and mean ρ = ‖r‖₂/‖x‖₂ over its flipped inputs and over the inputs all three
flipped; the per-input relative ρ difference ours vs each library; time ratios.
torchattacks applies the overshoot to each step and clamps each step, so its ρ differs
by design; it also leaves gradients in the model's parameters (counted, then cleared).
``compare_deepfool`` returns all of it as a dict (benchmarks/gpu_check.py uses it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attacks.deepfool import deepfool  # noqa: E402
from bench.config.schema import BackboneConfig  # noqa: E402
from bench.models.backbones import MLP, SmallCNN, create_backbone  # noqa: E402
from bench.models.classifier import Classifier  # noqa: E402
from registry import create_plugin  # noqa: E402

STEPS, OVERSHOOT = 50, 0.02


def digits_mlp(n: int, device, train_steps: int = 200, batch: int = 128):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    backbone = MLP((1, 8, 8), (256, 256))
    model = Classifier(backbone, create_plugin("NoPen", backbone.feature_dim, 10), [x.mean().item()], [x.std().item()])
    train(model, x[:1400], y[:1400], steps=train_steps, batch=batch, lr=2e-3, device=device)
    return model.cpu(), x[1400:1400 + n], y[1400:1400 + n]


def synthetic_patterns(n_train: int, n_test: int):
    """A 10-class task on 3×32×32 inputs in [0, 1]: a smooth random pattern per class plus noise."""
    g = torch.Generator().manual_seed(0)
    patterns = nn.functional.interpolate(torch.randn(10, 3, 4, 4, generator=g), size=32, mode="bilinear",
                                         align_corners=False)
    total = n_train + n_test
    y = torch.randint(0, 10, (total,), generator=g)
    x = (0.5 + 0.2 * patterns[y] + 0.15 * torch.randn(total, 3, 32, 32, generator=g)).clamp(0, 1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def cnn32(n: int, device, train_steps: int = 60, batch: int = 128):
    xtr, ytr, x, y = synthetic_patterns(2000, n)
    torch.manual_seed(0)
    backbone = SmallCNN((3, 32, 32), (16, 32, 64))
    model = Classifier(backbone, create_plugin("NoPen", backbone.feature_dim, 10), [0.5] * 3, [0.25] * 3)
    train(model, xtr, ytr, steps=train_steps, batch=batch, lr=3e-3, device=device)
    return model.cpu(), x, y


def resnet18(n: int, device, train_steps: int = 100, batch: int = 128):
    """bench's CIFAR ResNet-18 on the synthetic task (float32)."""
    xtr, ytr, x, y = synthetic_patterns(2000, n)
    torch.manual_seed(0)
    backbone = create_backbone(BackboneConfig(name="resnet18"), (3, 32, 32))
    model = Classifier(backbone, create_plugin("NoPen", backbone.feature_dim, 10), [0.5] * 3, [0.25] * 3)
    train(model, xtr, ytr, steps=train_steps, batch=batch, lr=1e-3, device=device)
    return model.cpu(), x, y


MODELS = {"digits-mlp": digits_mlp, "cnn32": cnn32, "resnet18": resnet18}


def train(model, x, y, steps, batch, lr, device="cpu"):
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device)).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_ours(model, x, y, device, steps=STEPS):
    return deepfool(model, x, y, overshoot=OVERSHOOT, max_iter=steps, device=device).x_adv.float()


def run_foolbox(model, x, y, device, steps=STEPS):
    import foolbox as fb
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    attack = fb.attacks.L2DeepFoolAttack(steps=steps, candidates=10, overshoot=OVERSHOOT)
    _, adv, _ = attack(fmodel, x.to(device), fb.criteria.Misclassification(y.to(device)), epsilons=None)
    return adv.detach().cpu()


def run_torchattacks(model, x, y, device, steps=STEPS):
    import torchattacks
    return torchattacks.DeepFool(model, steps=steps, overshoot=OVERSHOOT)(x.to(device), y.to(device)).detach().cpu()


def timed(fn, model, x, y, device, steps):
    sync(device)
    t0 = time.perf_counter()
    out = fn(model, x, y, device, steps)
    sync(device)
    return time.perf_counter() - t0, out


def evaluate(model, x, y, adv, device):
    with torch.no_grad():
        clean = model(x.to(device)).argmax(1).cpu()
        final = model(adv.to(device)).argmax(1).cpu()
    flipped = (clean == y) & (final != y)
    rho = (adv - x).flatten(1).double().norm(dim=1) / x.flatten(1).double().norm(dim=1)
    return flipped, rho


def _agreement(f_a, r_a, f_b, r_b) -> dict:
    """Per-input agreement of two attacks' outcomes: same flip verdict, relative ρ difference."""
    both = f_a & f_b
    rel = (r_a[both] - r_b[both]).abs() / r_b[both]
    return {"n_inputs": int(f_a.numel()), "n_both_flipped": int(both.sum()),
            "same_verdict": float((f_a == f_b).double().mean()),
            "max_rel_rho_diff": float(rel.max()) if both.any() else None,
            "median_rel_rho_diff": float(rel.median()) if both.any() else None}


def compare_deepfool(model, x, y, device, *, repeats: int = 3, steps: int = STEPS,
                     n_torchattacks: int | None = None, methods=("ours", "foolbox", "torchattacks")) -> dict:
    """Time and compare the three DeepFools on the same model and inputs; figures as a dict.

    ``n_torchattacks``: run torchattacks on the first N inputs only (None: all); its
    speed-up is then per input. A method whose package is missing is recorded as skipped.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    runners = {"ours": run_ours, "foolbox": run_foolbox, "torchattacks": run_torchattacks}
    times: dict[str, list[float]] = {}
    advs: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    interleaved = [m for m in methods if m != "torchattacks"]
    for name, module in (("foolbox", "foolbox"), ("torchattacks", "torchattacks")):
        if name in methods:  # imported before the clock starts: a first import takes seconds
            try:
                __import__(module)
            except ImportError as exc:
                skipped[name] = f"not installed ({exc.name})"
    for _ in range(repeats):  # interleaved: load from other processes hits both alike
        for name in interleaved:
            if name in skipped:
                continue
            try:
                t, advs[name] = timed(runners[name], model, x, y, device, steps)
            except ImportError as exc:
                skipped[name] = f"not installed ({exc.name})"
                continue
            times.setdefault(name, []).append(t)
    leaked = None
    m_ta = len(x) if n_torchattacks is None else min(len(x), n_torchattacks)
    if "torchattacks" in methods and "torchattacks" not in skipped and m_ta > 0:
        try:
            t, advs["torchattacks"] = timed(run_torchattacks, model, x[:m_ta], y[:m_ta], device, steps)
            times["torchattacks"] = [t]
            leaked = sum(int(p.grad is not None and bool(p.grad.abs().sum() > 0)) for p in model.parameters())
        except ImportError as exc:
            skipped["torchattacks"] = f"not installed ({exc.name})"
        model.zero_grad(set_to_none=True)
    with torch.no_grad():
        correct = int((model(x.to(device)).argmax(1).cpu() == y).sum())
    stats = {}
    for name, adv in advs.items():
        k = adv.shape[0]
        stats[name] = evaluate(model, x[:k], y[:k], adv, device)
    common = torch.stack([f[:m_ta] for f, _ in stats.values()]).all(0) if stats else torch.zeros(0, dtype=torch.bool)
    result = {"n_inputs": len(x), "input_shape": list(x.shape[1:]), "n_correct": correct, "device": str(device),
              "steps": steps, "overshoot": OVERSHOOT, "candidates": "all", "repeats": repeats,
              "torch_threads": torch.get_num_threads(), "methods": {}, "skipped": skipped}
    for name in advs:
        flipped, rho = stats[name]
        n_in = flipped.numel()
        t = statistics.median(times[name])
        result["methods"][name] = {
            "time_s": t, "n_inputs": n_in, "time_per_input_s": t / n_in, "flipped": int(flipped.sum()),
            "mean_rho_own_flipped": float(rho[flipped].mean()) if flipped.any() else None,
            "mean_rho_flipped_by_all": float(rho[:m_ta][common].mean()) if bool(common.any()) else None,
            "times_s": times[name]}
    if "ours" in stats:
        f_ours, r_ours = stats["ours"]
        for other in ("foolbox", "torchattacks"):
            if other in stats:
                f_o, r_o = stats[other]
                k = f_o.numel()
                result[f"ours_vs_{other}"] = _agreement(f_ours[:k], r_ours[:k], f_o, r_o)
                result[f"speedup_vs_{other}"] = (result["methods"][other]["time_per_input_s"]
                                                 / result["methods"]["ours"]["time_per_input_s"])
    if leaked is not None:
        result["torchattacks_leaked_grad_tensors"] = leaked
    return result


def print_comparison(name: str, r: dict) -> None:
    print(f"\n== {name}: {r['n_inputs']} inputs {tuple(r['input_shape'])}, {r['n_correct']} classified correctly, "
          f"device {r['device']}, torch threads {r['torch_threads']}")
    print(f"{'method':<14}{'inputs':>7}{'time (s)':>10}{'flipped':>9}{'mean ρ (own flipped)':>22}"
          f"{'mean ρ (flipped by all)':>25}")

    def fmt(v):
        return f"{v:.5f}" if v is not None else "nan"
    for k, m in r["methods"].items():
        print(f"{k:<14}{m['n_inputs']:>7}{m['time_s']:>10.3f}{m['flipped']:>9}{fmt(m['mean_rho_own_flipped']):>22}"
              f"{fmt(m['mean_rho_flipped_by_all']):>25}")
    for k, why in r["skipped"].items():
        print(f"{k:<14} skipped: {why}")
    fb = r.get("ours_vs_foolbox")
    if fb:
        rel = fb["max_rel_rho_diff"]
        print(f"ours vs foolbox: max per-input relative ρ difference "
              f"{rel if rel is None else format(rel, '.2e')} over {fb['n_both_flipped']} inputs both flipped")
    parts = []
    if "speedup_vs_foolbox" in r:
        parts.append(f"{r['speedup_vs_foolbox']:.1f}× vs foolbox (all candidates)")
    if "speedup_vs_torchattacks" in r:
        parts.append(f"{r['speedup_vs_torchattacks']:.0f}× vs torchattacks (per input)")
    if parts:
        print("speed-up of ours: " + ", ".join(parts))
    if "torchattacks_leaked_grad_tensors" in r:
        print(f"torchattacks left gradients in {r['torchattacks_leaked_grad_tensors']} parameter tensors (cleared)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--n-digits", type=int, default=360)
    parser.add_argument("--n-cnn", type=int, default=100)
    parser.add_argument("--n-torchattacks", type=int, help="torchattacks on the first N inputs only (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["digits-mlp", "cnn32"], choices=list(MODELS))
    parser.add_argument("--no-torchattacks", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}; load average {load}; steps {STEPS}, overshoot {OVERSHOOT}, all 10 classes")
    for name in args.models:
        n = args.n_digits if name == "digits-mlp" else args.n_cnn
        model, x, y = MODELS[name](n, device)
        r = compare_deepfool(model, x, y, device, repeats=args.repeats,
                             n_torchattacks=0 if args.no_torchattacks else args.n_torchattacks)
        print_comparison(name, r)


if __name__ == "__main__":
    main()
