"""``bench attack --runs DIR [--attacks …]``: attack already-trained runs, no retraining.

``--attacks`` takes evaluator names (deepfool, attacks, best_known, attack_unit_test,
reliability, attack_collapse, …) and/or attack-method names (pgd-linf, fmn-l2, …; see ``bench list
attacks``); method names run through the ``attacks`` evaluator with just those methods.
The evaluators a requested one needs (its ``requires``) are added and everything runs in
dependency order. Default: the suite's attack evaluators, or DEFAULT when the suite lists
none. The evaluations are merged into each run's result.json (atomically; other entries
are kept).
"""
from __future__ import annotations

import argparse
import time

from bench.cli.common import add_imports, add_runs, add_threads, apply_threads, runs_root, suite_name
from bench.core.errors import BenchError

DEFAULT = ("deepfool", "attacks", "best_known", "attack_unit_test", "reliability", "attack_collapse")


def add_arguments(subparsers) -> None:
    parser = subparsers.add_parser(
        "attack", help="run attack evaluators on finished runs (no retraining)",
        description="Attack every finished run under --runs and merge the results into its result.json.")
    add_runs(parser, "a runs tree or one run folder (default: runs/)")
    parser.add_argument("--suite", help="only runs of this suite: a name or a YAML path (needed when --runs mixes suites)")
    parser.add_argument("--attacks", nargs="+", metavar="NAME",
                        help="attack evaluators (bench list attacks: deepfool, attacks, best_known, reliability, …) "
                             "and/or attack methods")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the suite's)")
    add_threads(parser)
    add_imports(parser)
    parser.add_argument("--quiet", action="store_true", help="nothing on stdout (errors still go to stderr)")
    parser.set_defaults(func=cmd_attack)


def plan_evaluators(requested: list[str] | None, suite_evaluators: tuple[str, ...],
                    suite_settings: dict) -> tuple[tuple[str, ...], dict]:
    """(evaluators in run order, settings overrides) for the requested names.

    The order, and the evaluators added because a requested one reads their results,
    come from the registry (each evaluator's ``requires``).
    """
    from bench.attacks import ATTACKS
    from bench.evaluation.hook import evaluator_names, run_order
    attack_evaluators = evaluator_names("attack")
    if not requested:
        chosen = [n for n in suite_evaluators if n in attack_evaluators] or list(DEFAULT)
        return run_order(chosen, suite_evaluators), {}
    evaluators, methods = [], []
    for name in requested:
        if name in attack_evaluators:
            evaluators.append(name)
        elif name in ATTACKS:
            methods.append(name)
        else:
            import difflib
            known = attack_evaluators + ATTACKS.names()
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise BenchError(f"unknown attack {name!r}{hint} (known: {', '.join(known)})")
    settings = {}
    if methods:
        evaluators.append("attacks")
        base = dict(suite_settings.get("attacks", {}))
        base["methods"] = methods
        base["params"] = {k: v for k, v in base.get("params", {}).items() if k in methods}
        settings["attacks"] = base
    return run_order(evaluators, suite_evaluators), settings


def require_registered_plugins(records) -> None:
    """One error line, before any work, for runs whose plugin this Python does not know
    (trained with a plugin from a package that is not installed here, or from a module
    that registered it in the training process only)."""
    from registry import PLUGINS
    missing: dict[str, list] = {}
    for rec in records:
        if rec.plugin not in PLUGINS:
            missing.setdefault(rec.plugin, []).append(rec.path)
    if not missing:
        return
    named = "; ".join(f"{name!r} ({len(paths)} run(s), e.g. {paths[0]})" for name, paths in missing.items())
    raise BenchError(f"plugin(s) not registered in this Python: {named}. Install the package that provides "
                     f"them (it registers them under the 'lpc_bench.plugins' entry point), or import the module "
                     f"that registers them with --import MODULE_OR_FILE; registered: "
                     f"{', '.join(PLUGINS.names())}")


def cmd_attack(args: argparse.Namespace) -> int:
    from bench.core.progress import progress
    from bench.evaluation.hook import evaluator_options
    from bench.runs.folder import load_runs, not_done_text, require_readable
    from bench.suites.imports import load_builtin_evaluators
    from bench.suites.imports import load_run_imports
    from bench.training.trainer import reevaluate_run

    apply_threads(args.threads)
    root = runs_root(args)
    records = load_runs(root, suite_name(args))
    load_run_imports([i for r in records for i in r.imports], args.imports)
    load_builtin_evaluators()
    require_readable(records, "attack")
    done = [r for r in records if r.status == "done" and not r.evaluated]
    evaluated = sum(r.evaluated for r in records)   # no checkpoint to reload: rerun `bench evaluate`
    skipped = not_done_text(records)
    if not done:
        raise BenchError(f"no finished runs under {root} ({skipped})")
    device = None
    if args.device:
        from bench.core.device import resolve_device
        device = resolve_device(args.device)
    # check every run's plan (plugins, names, settings) before attacking any of them
    require_registered_plugins(done)
    plans = []
    for rec in done:
        suite = rec.suite_config()
        evaluators, settings = plan_evaluators(args.attacks, suite.evaluation.evaluators, suite.evaluation.settings)
        merged = {**suite.evaluation.settings, **settings}
        for name in evaluators:
            evaluator_options(name, merged)
        plans.append((rec, evaluators, settings))
    started = time.perf_counter()
    bar = progress(plans, quiet=args.quiet, desc="attack", unit="run")
    for rec, evaluators, settings in bar:
        bar.set_postfix_str(f"{rec.plugin}/seed{rec.seed}")
        reevaluate_run(rec.path, evaluators, settings, quiet=True, device=device)
    names = ", ".join(plans[0][1])
    if not args.quiet:
        print(f"attacked {len(plans)} run(s) with {names} in {time.perf_counter() - started:.1f} s"
              f"{f'; skipped {skipped}' if skipped else ''}"
              f"{f'; skipped {evaluated} evaluated (rerun bench evaluate for them)' if evaluated else ''}; "
              f"results merged into each result.json")
    return 0
