"""The cost of ``bench evaluate`` over the trainer's own evaluation of the same model (target ≤ 1.05×).

    python benchmarks/bench_evaluate.py [--suite digits] [--plugin NoPen] [--epochs 20] [--repeat 3]
                                        [--set KEY=VALUE ...]

Trains one run of the suite with the harness (a temporary runs folder), then times, in
alternation (``--repeat`` times each, the fastest kept: the machine may be shared):

* **trainer**: ``trainer.evaluate_run`` on the trained Classifier, as at the end of a run
  (accuracies and latents on every split, then every evaluator of the suite);
* **evaluate (.pt2)**: the Classifier exported with ``torch.export`` (dynamic batch), then
  ``load_model`` + ``bench.evaluate`` on it, as ``bench evaluate --model FILE`` does: file
  loading, the checks before any attack, the same evaluators, and the run folder written;
* **evaluate (.pt2 loaded)**: the same, the file loaded once beforehand (``torch.export.load``
  is a fixed cost of about a second, whatever the model, that a longer evaluation hides);
* **evaluate (module)**: ``bench.evaluate`` on the Classifier object itself (the harness's
  own overhead, without the exported program's).

Prints each time, the ratios to the trainer's, and whether the evaluations agree number for
number (the latent is hooked on ``backbone`` or ``head.penultimate``, NC3 reads
``head.classifier``'s weight, as the plugin hands them to the trainer).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.training.evaluate import evaluate  # noqa: E402


def strip(data):
    if isinstance(data, dict):
        return {k: strip(v) for k, v in data.items() if "wall" not in k and k != "latent"}
    if isinstance(data, list):
        return [strip(v) for v in data]
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="digits")
    p.add_argument("--plugin", default="NoPen")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from bench.models.files import load_model
    from bench.runs.folder import plan_runs
    from bench.suites import load_suite
    from bench.training.trainer import evaluate_run, load_trained_run, train_run

    overrides = [f"plugins=[{args.plugin}]", "seeds=[0]", f"recipe.epochs={args.epochs}", *args.overrides]
    suite = load_suite(args.suite, overrides)
    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    try:
        spec = plan_runs(suite)[0]
        t0 = time.perf_counter()
        train_run(suite, spec, work / "runs")
        print(f"trained {spec.key} on {suite.name} ({args.epochs} epochs) in {time.perf_counter() - t0:.1f} s")
        suite, spec, model, data, device = load_trained_run(spec.directory(work / "runs"))
        latent = "head.penultimate" if model.head.penultimate is not None else "backbone"
        x = data.test_x[:8].float() / data.pixel_scale
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
        torch.export.save(program, work / "model.pt2")

        def trainer():
            return evaluate_run(suite, spec, model, data, device)

        def from_file(k=[0]):
            k[0] += 1
            loaded, info = load_model(str(work / "model.pt2"))
            return evaluate(loaded, suite, latent=latent, classifier="head.classifier", runs=work / "evaluated",
                            name=f"file{k[0]}", provenance=info, device=device)

        preloaded, preloaded_info = load_model(str(work / "model.pt2"))

        def from_loaded(k=[0]):
            k[0] += 1
            return evaluate(preloaded, suite, latent=latent, classifier="head.classifier", runs=work / "evaluated",
                            name=f"loaded{k[0]}", provenance=preloaded_info, device=device)

        def from_module():
            return evaluate(model, suite, latent=latent, classifier="head.classifier", device=device)

        names = ("trainer", "evaluate (.pt2)", "evaluate (.pt2 loaded)", "evaluate (module)")
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        results = {}
        for _ in range(args.repeat):
            for name, fn in zip(names, (trainer, from_file, from_loaded, from_module)):
                t0, c0 = time.perf_counter(), time.process_time()
                results[name] = fn()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        print(f"evaluators: {', '.join(suite.evaluation.evaluators)}; {args.repeat} repeat(s), fastest kept; "
              f"load average {os.getloadavg()[0]:.2f}; CPU time is this process's (one thread: the work done, "
              f"whatever else the shared machine runs)")
        for name in names:
            print(f"  {name:<18} CPU {min(cpu[name]):7.2f} s (ratio {min(cpu[name]) / min(cpu['trainer']):.3f}×)   "
                  f"wall {min(wall[name]):7.2f} s (ratio {min(wall[name]) / min(wall['trainer']):.3f}×)")
        same = all(strip(results[n]["evaluations"]) == strip(results["trainer"]["evaluations"])
                   for n in names[1:])
        print(f"evaluations identical to the trainer's: {same}")
        ratio = min(cpu["evaluate (.pt2)"]) / min(cpu["trainer"])
        loaded = min(cpu["evaluate (.pt2 loaded)"]) / min(cpu["trainer"])
        print(f"overhead ratio (bench evaluate on the exported model / trainer, CPU time): {ratio:.3f}× with "
              f"torch.export.load, {loaded:.3f}× without it (target ≤ 1.05×: "
              f"{'met' if ratio <= 1.05 else 'NOT met'} / {'met' if loaded <= 1.05 else 'NOT met'})")
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
