"""Our batched DeepFool vs foolbox's L2DeepFool (all candidates) vs torchattacks' DeepFool.

    python benchmarks/bench_deepfool.py                       # CPU, 1 thread, both models
    python benchmarks/bench_deepfool.py --device cuda --threads 0

One run, same models, same inputs, same settings (50 steps, overshoot 0.02, all classes):

* ``digits-mlp``: the digits suite's MLP (64-256-256, SiLU, NoPen head) trained briefly
  on sklearn digits; the 360 inputs that follow the training images.
* ``cnn32``: bench's ``small_cnn`` backbone (channels 16-32-64) with a NoPen head on
  32×32×3 inputs, trained briefly on a synthetic 10-class task (a smooth random pattern
  per class plus pixel noise); ``--n-cnn`` held-out inputs.

For each method: wall time (median of ``--repeats`` interleaved runs; torchattacks once,
it is slow), inputs flipped (re-classified here: correct, then another class after
clamping) and mean ρ = ‖r‖₂/‖x‖₂ over its flipped inputs and over the inputs all three
flipped; the largest per-input relative ρ difference ours vs foolbox; time ratios.
torchattacks applies the overshoot to each step and clamps each step, so its ρ differs
by design; it also leaves gradients in the model's parameters (counted, then cleared).
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
from bench.models.backbones import MLP, SmallCNN  # noqa: E402
from bench.models.classifier import Classifier  # noqa: E402
from registry import create_plugin  # noqa: E402

STEPS, OVERSHOOT = 50, 0.02


def digits_mlp(n: int, device):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    backbone = MLP((1, 8, 8), (256, 256))
    model = Classifier(backbone, create_plugin("NoPen", backbone.feature_dim, 10), [x.mean().item()], [x.std().item()])
    train(model, x[:1400], y[:1400], steps=200, batch=128, lr=2e-3)
    return model, x[1400:1400 + n], y[1400:1400 + n]


def cnn32(n: int, device):
    g = torch.Generator().manual_seed(0)
    patterns = nn.functional.interpolate(torch.randn(10, 3, 4, 4, generator=g), size=32, mode="bilinear",
                                         align_corners=False)
    total = 2000 + n
    y = torch.randint(0, 10, (total,), generator=g)
    x = (0.5 + 0.2 * patterns[y] + 0.15 * torch.randn(total, 3, 32, 32, generator=g)).clamp(0, 1)
    torch.manual_seed(0)
    backbone = SmallCNN((3, 32, 32), (16, 32, 64))
    model = Classifier(backbone, create_plugin("NoPen", backbone.feature_dim, 10), [0.5] * 3, [0.25] * 3)
    train(model, x[:2000], y[:2000], steps=60, batch=128, lr=3e-3)
    return model, x[2000:], y[2000:]


def train(model, x, y, steps, batch, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(model, x, y, device):
    return deepfool(model, x, y, overshoot=OVERSHOOT, max_iter=STEPS, device=device).x_adv.float()


def run_foolbox(model, x, y, device):
    import foolbox as fb
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    attack = fb.attacks.L2DeepFoolAttack(steps=STEPS, candidates=10, overshoot=OVERSHOOT)
    _, adv, _ = attack(fmodel, x.to(device), fb.criteria.Misclassification(y.to(device)), epsilons=None)
    return adv.detach().cpu()


def run_torchattacks(model, x, y, device):
    import torchattacks
    return torchattacks.DeepFool(model, steps=STEPS, overshoot=OVERSHOOT)(x.to(device), y.to(device)).detach().cpu()


def timed(fn, *args):
    device = args[-1]
    sync(device)
    t0 = time.perf_counter()
    out = fn(*args)
    sync(device)
    return time.perf_counter() - t0, out


def evaluate(model, x, y, adv, device):
    with torch.no_grad():
        clean = model(x.to(device)).argmax(1).cpu()
        final = model(adv.to(device)).argmax(1).cpu()
    flipped = (clean == y) & (final != y)
    rho = (adv - x).flatten(1).double().norm(dim=1) / x.flatten(1).double().norm(dim=1)
    return flipped, rho


def bench_model(name, model, x, y, device, repeats, with_torchattacks):
    model = model.to(device).eval()
    ours_t, fb_t = [], []
    for _ in range(repeats):  # interleaved: load from other processes hits both alike
        t, adv_ours = timed(run_ours, model, x, y, device)
        ours_t.append(t)
        t, adv_fb = timed(run_foolbox, model, x, y, device)
        fb_t.append(t)
    results = {"ours": (statistics.median(ours_t), adv_ours), "foolbox": (statistics.median(fb_t), adv_fb)}
    leaked = 0
    if with_torchattacks:
        t, adv_ta = timed(run_torchattacks, model, x, y, device)
        leaked = sum(int(p.grad is not None and bool(p.grad.abs().sum() > 0)) for p in model.parameters())
        model.zero_grad(set_to_none=True)
        results["torchattacks"] = (t, adv_ta)
    with torch.no_grad():
        correct = int((model(x.to(device)).argmax(1).cpu() == y).sum())
    stats = {k: evaluate(model, x, y, adv, device) for k, (_, adv) in results.items()}
    common = torch.stack([f for f, _ in stats.values()]).all(0)
    print(f"\n== {name}: {len(x)} inputs {tuple(x.shape[1:])}, {correct} classified correctly, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':<14}{'time (s)':>10}{'flipped':>9}{'mean ρ (own flipped)':>22}{'mean ρ (flipped by all)':>25}")
    for k, (t, _) in results.items():
        flipped, rho = stats[k]
        own = rho[flipped].mean().item() if flipped.any() else float("nan")
        both = rho[common].mean().item() if common.any() else float("nan")
        print(f"{k:<14}{t:>10.3f}{int(flipped.sum()):>9}{own:>22.5f}{both:>25.5f}")
    f_ours, r_ours = stats["ours"]
    f_fb, r_fb = stats["foolbox"]
    both = f_ours & f_fb
    rel = ((r_ours[both] - r_fb[both]).abs() / r_fb[both]).max().item() if both.any() else float("nan")
    print(f"ours vs foolbox: max per-input relative ρ difference {rel:.2e} over {int(both.sum())} inputs both flipped")
    t_ours = results["ours"][0]
    print(f"speed-up of ours: {results['foolbox'][0] / t_ours:.1f}× vs foolbox (all candidates)"
          + (f", {results['torchattacks'][0] / t_ours:.0f}× vs torchattacks" if with_torchattacks else ""))
    if with_torchattacks:
        print(f"torchattacks left gradients in {leaked} parameter tensors (cleared)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--n-digits", type=int, default=360)
    parser.add_argument("--n-cnn", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["digits-mlp", "cnn32"], choices=["digits-mlp", "cnn32"])
    parser.add_argument("--no-torchattacks", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}; load average {load}; steps {STEPS}, overshoot {OVERSHOOT}, all 10 classes")
    builders = {"digits-mlp": (digits_mlp, args.n_digits), "cnn32": (cnn32, args.n_cnn)}
    for name in args.models:
        build, n = builders[name]
        model, x, y = build(n, device)
        bench_model(name, model, x, y, device, args.repeats, not args.no_torchattacks)


if __name__ == "__main__":
    main()
