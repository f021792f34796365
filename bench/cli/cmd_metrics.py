"""``bench metrics --runs DIR``: compute the metric evaluators on already-trained runs.

Nothing is retrained: each done run's checkpoint is loaded, its latents recomputed and
the chosen metrics merged into its result.json (atomically). Then the suite's
separation-vs-robustness analysis is written to ``<runs>/<suite>/analysis.json``.
"""
from __future__ import annotations

import sys
import time

from bench.cli.common import add_imports, add_runs, add_threads, apply_threads, runs_root, suite_name
from bench.core.errors import BenchError


def add_arguments(subparsers) -> None:
    p = subparsers.add_parser("metrics", help="compute latent-geometry metrics for finished runs (no retraining)")
    add_runs(p)
    p.add_argument("--suite", help="the suite: a name or a YAML path (default: the only one under --runs)")
    p.add_argument("--metrics", nargs="+", metavar="NAME",
                   help="metric evaluators to compute (default: every one; see `bench list metrics`)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric setting, e.g. --set entropy.k=10 (repeatable; overrides the suite's)")
    p.add_argument("--plugins", nargs="+", help="only runs of these plugins")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: auto)")
    add_threads(p)
    add_imports(p)
    p.add_argument("--no-analysis", action="store_true", help="do not write analysis.json")
    p.add_argument("--quiet", action="store_true", help="nothing on stdout (failures still go to stderr)")
    p.set_defaults(func=cmd_metrics)


def parse_settings(texts: list[str], names: tuple[str, ...]) -> dict[str, dict]:
    """``["entropy.k=10"]`` → ``{"entropy": {"k": 10}}``, each checked against its options."""
    from bench.evaluation.hook import evaluator_options
    from bench.core.typed import parse_override
    settings: dict[str, dict] = {}
    for text in texts:
        key, value = parse_override(text)
        metric, sep, option = key.partition(".")
        if not sep or not option:
            raise BenchError(f"--set {text!r}: expected METRIC.KEY=VALUE, e.g. entropy.k=10")
        if metric not in names:
            raise BenchError(f"--set {text!r}: {metric!r} is not among the metrics computed ({', '.join(names)})")
        settings.setdefault(metric, {})[option] = value
    for name in settings:
        evaluator_options(name, settings)   # BenchError naming the key on a bad value
    return settings


def cmd_metrics(args) -> int:
    from bench.core.device import resolve_device
    from bench.core.progress import progress
    from bench.evaluation.hook import evaluator_names
    from bench.metrics.correlation import write_analysis
    from bench.runs.folder import load_runs, not_done_text, require_readable
    from bench.suites.imports import load_builtin_evaluators
    from bench.suites.imports import load_run_imports
    from bench.training.trainer import reevaluate_run

    apply_threads(args.threads)
    root = runs_root(args)
    records = load_runs(root, suite_name(args))
    load_run_imports([i for r in records for i in r.imports], args.imports)
    load_builtin_evaluators()
    available = evaluator_names("metric")
    names = tuple(args.metrics or available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise BenchError(f"unknown metric(s) {', '.join(unknown)} (available: {', '.join(available)})")
    settings = parse_settings(args.settings, names)
    suite = records[0].suite
    selected = [r for r in records if args.plugins is None or r.plugin in args.plugins]
    require_readable(selected, "metrics")
    done = [r for r in selected if r.status == "done" and not r.evaluated]   # evaluated: no checkpoint
    skipped = not_done_text(selected)
    if not done:
        raise BenchError(f"no finished runs of suite {suite} under {root} to compute metrics for ({skipped})")
    device = resolve_device(args.device) if args.device else None

    t0 = time.perf_counter()
    failures = []
    bar = progress(done, quiet=args.quiet, desc="metrics", unit="run")
    for rec in bar:
        try:
            result = reevaluate_run(rec.path, names, settings, quiet=True, device=device)
        except BenchError as exc:
            failures.append(f"{rec.path}: {exc}")
            continue
        if args.quiet:
            continue
        bar.write(_summary_line(rec, result))
    if not args.quiet:
        print(f"{suite}: metrics ({', '.join(names)}) for {len(done) - len(failures)} run(s) in "
              f"{time.perf_counter() - t0:.1f} s" + (f"; skipped {skipped}" if skipped else ""))
    for line in failures:
        print(f"failed: {line}", file=sys.stderr)
    if not args.no_analysis:
        path = write_analysis(root, suite)
        if not args.quiet:
            print(f"analysis: {path}")
    return 1 if failures else 0


def _fmt(value, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def _summary_line(rec, result: dict) -> str:
    ev = result.get("evaluations", {})
    geo = ev.get("geometry", {}).get("train", {})
    ent = ev.get("entropy", {}).get("train", {})
    return (f"{rec.plugin}/seed{rec.seed}-lr{rec.lr:g}: R={_fmt(geo.get('R_mean'))} "
            f"trΣ_W={_fmt(geo.get('sigma_w_trace'))} NC1={_fmt(geo.get('nc1'))} "
            f"H/d={_fmt(ent.get('entropy_per_dim'))} (train)")
