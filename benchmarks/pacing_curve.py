"""Where to stop a step-paced suite: one run's metrics along its reference epochs.

Trains one (suite, plugin, seed) with the harness's own pieces (``build_model``,
``make_optimizer``, ``batch_stream``, ``_train_epoch``: the same batches, schedules and
numbers as ``bench run``) for ``--epochs`` reference epochs, and every ``--every`` epochs
prints γ, the lr, the training loss and accuracy, validation and test accuracy, the class
separation ratio R and Σ_W's trace on the test latents, and (``--deepfool N``) the mean
DeepFool ρ on N fixed test inputs. Used to choose digits-paper's length: the suite stops
where these numbers have stopped moving.

    python benchmarks/pacing_curve.py --plugin LPC --epochs 480 --every 20 --deepfool 120
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attacks.deepfool import deepfool  # noqa: E402
from bench.data import DeviceLoader  # noqa: E402
from bench.metrics.geometry import geometry  # noqa: E402
from bench.runs.folder import RunSpec  # noqa: E402
from bench.suites import load_suite  # noqa: E402
from bench.training.trainer import (_train_epoch, batch_stream, build_model, get_data,  # noqa: E402
                                    make_optimizer, predict)


def snapshot(model, data, suite, n_deepfool: int) -> dict:
    device = torch.device("cpu")
    bs = suite.recipe.eval_batch_size
    out = {}
    for split in ("val", "test"):
        x, y = data.split(split)
        z, pred = predict(model, x, data.pixel_scale, device, bs)
        out[f"{split}_acc"] = float((pred == y).float().mean())
    geo = geometry(z.double().numpy(), y.numpy(), data.num_classes)
    out.update(R=geo["R_mean"], sigma_w_trace=geo["sigma_w_trace"], latent_norm=float(z.norm(dim=1).mean()))
    if n_deepfool:
        x, y = data.split("test")
        xs = x[:n_deepfool].float() / data.pixel_scale
        res = deepfool(model.eval(), xs, y[:n_deepfool], overshoot=0.02, max_iter=50)
        rho = res.rho[~torch.isnan(res.rho)]
        out["deepfool_rho"] = float(rho.mean()) if rho.numel() else math.nan
        out["deepfool_flipped"] = int(rho.numel())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="digits-paper")
    p.add_argument("--plugin", default="LPC")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=480, help="reference epochs to train")
    p.add_argument("--every", type=int, default=20, help="reference epochs between snapshots")
    p.add_argument("--deepfool", type=int, default=0, help="test inputs for DeepFool at each snapshot (0: none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--jsonl", type=Path, help="also write the snapshots here, one JSON object a line")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    suite = load_suite(args.suite, [*args.overrides, f"recipe.epochs={args.epochs}"])
    recipe, device = suite.recipe, torch.device("cpu")
    data = get_data(suite)
    spec = RunSpec(suite.name, args.plugin, args.seed, suite.lrs[0])
    model = build_model(suite, spec.plugin, data, spec.seed)
    optimizer = make_optimizer(model, suite, spec.lr)
    loader = DeviceLoader(data.train_x, data.train_y, recipe.batch_size, pixel_scale=data.pixel_scale,
                          device=device, shuffle=True, augment=recipe.augment, padding=recipe.crop_padding)
    epoch_steps = recipe.epoch_steps or len(loader)
    stream = batch_stream(loader, spec.seed)
    print(f"{suite.name} {spec.plugin} seed {spec.seed}: {args.epochs} reference epochs of {epoch_steps} steps")
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        row = _train_epoch(model, optimizer, itertools.islice(stream, epoch_steps), suite, spec, epoch, device, "off")
        if (epoch + 1) % args.every == 0 or epoch + 1 == args.epochs:
            snap = {"epoch": epoch + 1, "step": (epoch + 1) * epoch_steps, "gamma": row.get("gamma"),
                    "lr": row["lr"], "loss_total": row["loss_total"], "train_acc": row["train_acc"],
                    **snapshot(model, data, suite, args.deepfool), "wall_s": time.perf_counter() - t0}
            model.train()
            print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in snap.items()}), flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as fh:
                    fh.write(json.dumps(snap) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
