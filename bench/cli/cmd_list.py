"""``bench list [WHAT]``: what is registered, with each entry's one-line description."""
from __future__ import annotations

import dataclasses

from bench.cli.common import add_imports

SECTIONS = ("suites", "plugins", "datasets", "backbones", "attacks", "metrics")


def add_arguments(subparsers) -> None:
    p = subparsers.add_parser("list", help="list suites, plugins, datasets, backbones, attacks, metrics",
                              description="`bench list` names everything registered; `bench list WHAT` gives "
                                          "one line per entry (plugins with their parameters and defaults).")
    p.add_argument("what", nargs="?", default="all", choices=["all", *SECTIONS])
    add_imports(p)
    p.set_defaults(func=cmd_list)


def _first_line(obj) -> str:
    doc = (getattr(obj, "doc", None) or getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _params(cls) -> str:
    params = getattr(cls, "Params", None)
    if params is None or not dataclasses.is_dataclass(params):
        return ""
    defaults = params()
    fields = [f"{f.name}={getattr(defaults, f.name)!r}" for f in dataclasses.fields(params)]
    return f"  [params: {', '.join(fields)}]" if fields else ""


def entries(what: str) -> list[tuple[str, str]]:
    """(name, description) of every entry of one section."""
    from bench.attacks import ATTACKS
    from bench.data import DATASETS
    from bench.evaluation.hook import EVALUATORS, evaluator_names
    from bench.models.backbones import BACKBONES
    from bench.suites import suite_names, suite_text
    from bench.suites.imports import load_builtin_evaluators
    from registry import PLUGINS
    load_builtin_evaluators()
    if what == "suites":
        return [(n, _suite_line(suite_text(n))) for n in suite_names()]
    if what == "plugins":
        return [(n, _first_line(PLUGINS.get(n)) + _params(PLUGINS.get(n))) for n in PLUGINS.names()]
    if what == "datasets":
        return [(n, _first_line(DATASETS.get(n))) for n in DATASETS.names()]
    if what == "backbones":
        return [(n, _first_line(BACKBONES.get(n))) for n in BACKBONES.names()]
    if what == "attacks":   # the attack evaluators a suite lists, then the methods `attacks` runs
        evaluators = [(n, _first_line(EVALUATORS.get(n))) for n in evaluator_names("attack")]
        return evaluators + [(n, _first_line(ATTACKS.get(n))) for n in ATTACKS.names() if n not in dict(evaluators)]
    return [(n, _first_line(EVALUATORS.get(n))) for n in evaluator_names("metric")]


def _suite_line(text: str) -> str:
    import yaml
    data = yaml.safe_load(text) or {}
    return " ".join(str(data.get("description") or "").split())


def cmd_list(args) -> int:
    from bench.suites.imports import load_imports
    load_imports(args.imports)
    if args.what == "all":
        for section in SECTIONS:
            names = [name for name, _ in entries(section)]
            print(f"{section}: {', '.join(names) if names else '(none)'}")
        return 0
    items = entries(args.what)
    print(f"{args.what}:")
    width = max((len(name) for name, _ in items), default=0)
    for name, doc in items:
        print(f"  {name:<{width}}  {doc or '(no description: its docstring is empty)'}")
    return 0
