"""Shared models and oracles of the attack tests (test_attacks.py, test_attack_reliability.py)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bench.evaluation.hook import EvalContext


def affine_problem(n=60, k=5, seed=0, scale=0.25, dtype=torch.float64):
    """A bias-ful linear classifier on 1×8×8 inputs near 0.5 (so clamping stays inactive)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, k)).to(dtype).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(k, 64, generator=g, dtype=dtype) * scale)
        model[1].bias.copy_(torch.randn(k, generator=g, dtype=dtype) * 0.1)
    codes = torch.randint(115, 141, (n, 1, 8, 8), generator=g, dtype=torch.uint8)  # ≈ [0.45, 0.55]
    x = codes.to(dtype) / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, codes, x, y


def closed_form(model, x, y, norm="L2"):
    """Distance from each x to the nearest point of another class (no box constraint)."""
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    xf = x.reshape(len(x), -1).double().numpy()
    f = xf @ w.T + b
    dist = np.empty(len(xf))
    best = np.empty(len(xf), dtype=int)
    for i, yi in enumerate(y.tolist()):
        cands = []
        for kk in range(w.shape[0]):
            if kk == yi:
                continue
            dw = w[yi] - w[kk]
            denom = np.linalg.norm(dw) if norm == "L2" else np.abs(dw).sum()
            cands.append(((f[i, yi] - f[i, kk]) / denom, kk))
        dist[i], best[i] = min(cands)
    return dist, best


def make_ctx(model, codes, labels, pixel_scale=255.0):
    data = SimpleNamespace(test_x=codes, test_y=labels, pixel_scale=pixel_scale)
    return EvalContext(model=model, data=data, device=torch.device("cpu"), latents={},
                       labels={}, predictions={}, subset=torch.arange(len(labels)))


def reclassify(model, x):
    with torch.no_grad():
        return model(x.to(next(model.parameters()).dtype)).argmax(1)


_DIGITS = {}


def digits():
    if not _DIGITS:
        from sklearn.datasets import load_digits
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        _DIGITS["x"], _DIGITS["y"] = x, torch.tensor(d.target)
    return _DIGITS["x"], _DIGITS["y"]


def trained(head: str, seed=0):
    """A small MLP (softmax head, or ArcFace-style scaled cosines) trained on sklearn digits."""
    from bench.models.backbones import MLP
    from bench.models.classifier import Classifier
    from registry import create_plugin
    torch.manual_seed(seed)
    x, y = digits()
    backbone = MLP((1, 8, 8), (48, 48))
    plugin = create_plugin("NoPen" if head == "softmax" else "ArcFace", backbone.feature_dim, 10)
    model = Classifier(backbone, plugin, [0.3], [0.4])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xtr, ytr = x[:1400], y[:1400]
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xtr), ytr).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), x[1400:1560], y[1400:1560]


@pytest.fixture(autouse=True)
def one_thread():
    # these models are tiny: on a shared 2-core machine one thread is many times faster
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def attacked_digits_context(plugin: str, eps_l2: list[float], **fields) -> EvalContext:
    """A digits Classifier of ``plugin`` after 60 full-batch Adam steps, in an EvalContext
    (latents and predictions of every split; ``fields`` adds to it) with deepfool, attacks
    (PGD-L2 and DDN-L2 at ``eps_l2`` on 80 test inputs) and best_known already run."""
    from bench.attacks.attack_evaluators import AttacksOptions, attacks_evaluator, deepfool_evaluator
    from bench.attacks.best_known import best_known_evaluator
    from bench.attacks.deepfool import DeepFoolOptions
    from bench.core.typed import from_dict
    from bench.evaluation.hook import NoOptions, attack_subset
    from bench.suites import load_suite
    from bench.training.trainer import build_model, get_data, predict
    suite = load_suite("digits", [f"plugins=[{plugin}]"])
    data = get_data(suite)
    model = build_model(suite, plugin, data, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.split("train")
    xf = x.float() / data.pixel_scale
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xf), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    latents, preds, labels = {}, {}, {}
    for split in ("train", "val", "test"):
        xs, ys = data.split(split)
        latents[split], preds[split] = predict(model, xs, data.pixel_scale, torch.device("cpu"), 1000)
        labels[split] = ys
    ctx = EvalContext(model=model, data=data, device=torch.device("cpu"), latents=latents, labels=labels,
                      predictions=preds, subset=attack_subset(data.test_y.shape[0], 80, 0), **fields)
    ctx.results["deepfool"] = deepfool_evaluator(ctx, DeepFoolOptions())
    ctx.results["attacks"] = attacks_evaluator(ctx, from_dict(AttacksOptions, {
        "methods": ["pgd-l2", "ddn-l2"], "eps_l2": list(eps_l2), "params": {"ddn-l2": {"steps": 30}}}))
    ctx.results["best_known"] = best_known_evaluator(ctx, NoOptions())
    return ctx
