"""The built-in suites (the YAML files beside this module) and the one loader of any suite.

``load_suite(name_or_path, overrides)`` reads a built-in suite by name or a YAML file by
path (``yaml.safe_load``), checks it against the typed dataclasses of
``bench.config.schema`` (an unknown key or a wrong type is an error naming the dotted
key), applies ``--set`` overrides with the same checks, then cross-checks the names it
uses against the registries (plugins and their ``plugin_params``, backbones, datasets,
evaluators). A suite written before plugins owned their parameters (``recipe.gamma_*``
…) is read through ``bench.config.migrate``.
"""
from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import yaml

from bench.config.migrate import migrate_suite_dict, moved_key_hint
from bench.config.params import check_suite_params
from bench.config.schema import Suite
from bench.core.errors import BenchError
from bench.core.typed import from_dict, parse_override
from bench.suites.imports import load_builtin_evaluators
from bench.suites.scaled import is_data_template, named_after_data, smoke_suite


def suite_names() -> list[str]:
    folder = resources.files("bench.suites")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def is_suite_path(name_or_path: str) -> bool:
    """A YAML path (``my.yaml``, or any existing file) rather than a built-in suite's name."""
    path = Path(name_or_path)
    return path.suffix in (".yaml", ".yml") or path.exists()


def suite_text(name_or_path: str) -> str:
    if is_suite_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise BenchError(f"suite file {name_or_path!r} does not exist")
        return path.read_text()
    resource = resources.files("bench.suites") / f"{name_or_path}.yaml"
    if not resource.is_file():
        raise BenchError(f"unknown suite {name_or_path!r} (built-in suites: {', '.join(suite_names())})")
    return resource.read_text()


def suite_name(name_or_path: str | None) -> str | None:
    """The name a suite's runs are filed under: a built-in name as given, a YAML file's
    ``name`` (read without checking the rest: ``report`` and ``check`` need only that)."""
    if name_or_path is None:
        return None
    if not is_suite_path(name_or_path):
        resource = resources.files("bench.suites") / f"{name_or_path}.yaml"
        if resource.is_file():
            _not_a_template(name_or_path, str(_parse(name_or_path, resource.read_text()).get("name") or ""))
        return name_or_path
    data = _parse(name_or_path, suite_text(name_or_path))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise BenchError(f"suite file {name_or_path!r} has no name")
    return _not_a_template(name_or_path, name)


def _not_a_template(given: str, name: str) -> str:
    if is_data_template(name):
        raise BenchError(f"suite {given!r} files its runs under the name of its data folder (the --data-root "
                         f"of bench run): pass that name as --suite (bench status --runs DIR lists the suites)")
    return name


def load_suite(name_or_path: str, overrides: list[str] | None = None, imports: tuple[str, ...] = (),
               *, smoke: bool = False) -> Suite:
    """A built-in suite by name, or a YAML file by path, checked and with overrides applied.

    ``smoke``: the suite at smoke scale, filed as ``<name>-smoke`` (``bench.suites.scaled``);
    a suite named after its data (``{data}``) is filled in from ``dataset.root``.

    ``imports`` (``--import``) join the suite's ``runtime.imports``; all are imported
    before the names are checked, and kept in their resolved form (absolute file paths).
    """
    from bench.suites.imports import load_imports
    data = migrate_suite_dict(_parse(name_or_path, suite_text(name_or_path)))
    for text in overrides or ():
        hint = moved_key_hint(parse_override(text)[0])
        if hint:
            raise BenchError(hint)
    suite = from_dict(Suite, data)
    suite = suite.with_overrides(list(overrides or []))
    loaded = load_imports((*suite.runtime.imports, *imports))
    suite = suite.replace(runtime=dataclasses.replace(suite.runtime, imports=loaded))
    validate_suite(suite)
    if smoke:
        suite = smoke_suite(suite)
        validate_suite(suite)   # its trimmed attack settings, through the same checks
    return named_after_data(suite)


def _parse(name_or_path: str, text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BenchError(f"suite {name_or_path!r} is not valid YAML{where}: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"suite {name_or_path!r} must be a YAML mapping, got {type(data).__name__}")
    return data


def validate_suite(suite: Suite) -> None:
    """Cross-checks that need the registries (plugin, backbone, dataset, evaluator names)."""
    from registry import PLUGINS, UnknownNameError
    from bench.models.backbones import BACKBONES
    from bench.data import DATASETS
    from bench.evaluation.hook import EVALUATORS, check_settings
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
        loader = DATASETS.get(suite.dataset.name)
        # an input-side plugin's inner attack and gradients live in [0, 1] pixel space: a dataset
        # loader that declares pixel_bounded = False (inputs not x / pixel_scale in [0, 1]) has none
        inputs = [p for p in suite.plugins if getattr(PLUGINS.get(p), "uses_input", lambda: False)()]
        if inputs and not getattr(loader, "pixel_bounded", True):
            raise BenchError(f"plugin(s) {', '.join(inputs)} attack or differentiate the inputs in [0, 1] pixel "
                             f"space, and dataset {suite.dataset.name} has no [0, 1] pixel bounds")
        for plugin in suite.plugin_seeds:  # a typo is an error, as in plugin_params
            PLUGINS.get(plugin)
        for name in suite.evaluation.evaluators:
            EVALUATORS.get(name)
        for name in suite.evaluation.settings:  # a typo here is an error, an unselected evaluator is not
            EVALUATORS.get(name)
    except UnknownNameError as exc:
        raise BenchError(str(exc)) from None
    check_suite_params(suite)
    check_settings(suite.evaluation)
    # settings of evaluators not selected (e.g. --set evaluation.evaluators=[]) are kept and checked
    from bench.evaluation.hook import evaluator_options
    for name in suite.evaluation.settings:
        evaluator_options(name, suite.evaluation.settings)


def add_plugins(suite: Suite, plugins) -> Suite:
    """``suite`` with every plugin of ``plugins`` it does not list appended (``bench run
    --plugins X`` for any registered plugin, built-in or imported), checked again."""
    from registry import PLUGINS, UnknownNameError
    extra = [p for p in dict.fromkeys(plugins or ()) if p not in suite.plugins]
    if not extra:
        return suite
    try:
        for plugin in extra:
            PLUGINS.get(plugin)
    except UnknownNameError as exc:
        raise BenchError(f"{exc}; a plugin of your own must be imported first: --import MODULE_OR_FILE") from None
    suite = suite.replace(plugins=(*suite.plugins, *extra))
    validate_suite(suite)
    return suite
