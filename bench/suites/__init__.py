"""The built-in suites (the YAML files beside this module) and the one loader of any suite.

``load_suite(name_or_path, overrides)`` reads a built-in suite by name or a YAML file by
path (``yaml.safe_load``), checks it against the typed dataclasses of
``bench.config.schema`` (an unknown key or a wrong type is an error naming the dotted
key), applies ``--set`` overrides with the same checks, then cross-checks the names it
uses against the registries (plugins, backbones, datasets, evaluators).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from bench.config.schema import Suite
from bench.core.errors import BenchError
from bench.core.typed import from_dict


def suite_names() -> list[str]:
    folder = resources.files("bench.suites")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_suite(name_or_path: str, overrides: list[str] | None = None) -> Suite:
    """A built-in suite by name, or a YAML file by path, checked and with overrides applied."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise BenchError(f"suite file {name_or_path!r} does not exist")
        text = path.read_text()
    else:
        resource = resources.files("bench.suites") / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise BenchError(f"unknown suite {name_or_path!r} (built-in suites: {', '.join(suite_names())})")
        text = resource.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BenchError(f"suite {name_or_path!r} is not valid YAML{where}: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"suite {name_or_path!r} must be a YAML mapping, got {type(data).__name__}")
    suite = from_dict(Suite, data)
    suite = suite.with_overrides(list(overrides or []))
    validate_suite(suite)
    return suite


def validate_suite(suite: Suite) -> None:
    """Cross-checks that need the registries (plugin, backbone, dataset, evaluator names)."""
    from registry import PLUGINS, UnknownNameError
    from bench.models.backbones import BACKBONES
    from bench.data import DATASETS
    from bench.evaluation.hook import EVALUATORS, check_settings, load_builtin_evaluators
    load_builtin_evaluators()
    try:
        for plugin in suite.plugins:
            cls = PLUGINS.get(plugin)
            width = getattr(cls, "latent_width", None)
            if width is not None and width not in suite.latent_widths:
                raise BenchError(f"plugin {plugin} needs latent_widths.{width}")
            if suite.recipe.epoch_steps is not None and not getattr(cls, "step_paced", True):
                raise BenchError(f"plugin {plugin} advances its schedules once per pass over the data "
                                 f"(step_paced = False) and cannot follow recipe.epoch_steps="
                                 f"{suite.recipe.epoch_steps}; drop the plugin or set recipe.epoch_steps=null")
        BACKBONES.get(suite.backbone.name)
        DATASETS.get(suite.dataset.name)
        for name in suite.evaluation.evaluators:
            EVALUATORS.get(name)
        for name in suite.evaluation.settings:  # a typo here is an error, an unselected evaluator is not
            EVALUATORS.get(name)
    except UnknownNameError as exc:
        raise BenchError(str(exc)) from None
    check_settings(suite.evaluation)
    # settings of evaluators not selected (e.g. --set evaluation.evaluators=[]) are kept and checked
    from bench.evaluation.hook import evaluator_options
    for name in suite.evaluation.settings:
        evaluator_options(name, suite.evaluation.settings)
