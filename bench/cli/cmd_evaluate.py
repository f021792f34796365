"""``bench evaluate --model FILE --suite S --runs DIR --name NAME``: the protocol on your own model.

``--model`` is a ``torch.export`` program (``.pt2``), a TorchScript file, or
``module.path:factory`` (or ``file.py:factory``) with ``--weights state_dict.pt`` (loaded with
``weights_only=True``). The model takes [0, 1] inputs of the suite's dataset shape (any
normalisation inside it) and returns logits. It is checked before any attack (eval mode,
determinism, logits not probabilities, class count, input shape, accuracy above chance); the
suite's evaluators then run through the trainer's own evaluation entry point, and one run
folder ``<runs>/<suite>/<name>/seed0-lr0`` is written whole, with the model file's sha256 and
size in its provenance, so that ``bench report`` lists it beside the trained plugins (marked
*evaluated*).
"""
from __future__ import annotations

import argparse

from bench.cli.common import add_imports, add_runs, add_threads, apply_threads, runs_root


def add_arguments(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate your own model (a .pt2, TorchScript or factory) with a suite",
                              description="Check a model, run a suite's evaluators on it and write one run folder.")
    p.add_argument("--model", required=True, metavar="FILE_OR_FACTORY",
                   help="a torch.export .pt2, a TorchScript file, or module.path:factory (with --weights)")
    p.add_argument("--weights", metavar="FILE", help="state dict for a factory's model (torch.load weights_only=True)")
    p.add_argument("--suite", default="digits", help="built-in suite name or a YAML path (default: digits)")
    add_runs(p)
    p.add_argument("--name", required=True, help="the model's name: its folder under <runs>/<suite>/ and its row")
    p.add_argument("--latent-layer", metavar="MODULE",
                   help="module whose output the geometry and collapse metrics measure (without it they are skipped)")
    p.add_argument("--classifier-layer", metavar="MODULE",
                   help="module whose (classes, latent) weight acts on the latent, for NC3 (default: NC3 not measured)")
    p.add_argument("--evaluators", nargs="+", metavar="NAME", help="only these of the suite's evaluators")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite value, as in `bench run` (repeatable)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the suite's)")
    add_threads(p)
    add_imports(p)
    p.add_argument("--quiet", action="store_true", help="nothing on stdout (errors still go to stderr)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bench.models.files import load_model
    from bench.training.evaluate import evaluate

    apply_threads(args.threads)
    overrides = list(args.overrides) + ([f"runtime.device={args.device}"] if args.device else [])
    model, info = load_model(args.model, args.weights)
    result = evaluate(model, args.suite, latent=args.latent_layer, classifier=args.classifier_layer, runs=runs_root(args), name=args.name,
                      evaluators=args.evaluators, overrides=overrides, imports=tuple(args.imports),
                      provenance=info, quiet=args.quiet)
    if not args.quiet:
        skipped = result.get("skipped") or {}
        print(f"evaluated {args.name} on suite {result['suite']}: test accuracy {result['test_acc']:.1%}; "
              f"{', '.join(result['evaluations']) or 'no evaluators'}"
              f"{f' (skipped {len(skipped)}: ' + next(iter(skipped.values())) + ')' if skipped else ''}; "
              f"written to {runs_root(args) / result['suite'] / args.name}")
    return 0
