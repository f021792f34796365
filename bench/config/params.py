"""A plugin's parameters in a suite: the plugin's declared defaults with the suite's values over them.

Each plugin declares its tunable parameters once, as a frozen dataclass ``Params`` with
defaults (``registry.base.Plugin``). A suite sets some of them per plugin,

    plugin_params:
      LPC: {gamma: {cap: 1.0e3}}          # a partial mapping: gamma's start and factor stay
      CenterLoss: {lam: 0.01}

and ``--set plugin_params.LPC.gamma.cap=1e3`` does the same from the command line. The
given mapping is merged into the defaults (nested mappings key by key) and checked with
``bench.core.typed.from_dict``: a mistyped name or a wrong type is an error naming the
dotted key, at suite load.
"""
from __future__ import annotations

from typing import Any, Mapping

from bench.core.errors import BenchError
from bench.core.typed import from_dict, to_dict
from registry import NoParams, UnknownNameError, get_plugin_class


def declared_params(plugin: str) -> type:
    """The ``Params`` dataclass plugin ``plugin`` declares (BenchError for an unknown plugin)."""
    try:
        return getattr(get_plugin_class(plugin), "Params", NoParams)
    except UnknownNameError as exc:
        raise BenchError(str(exc)) from None


def merged(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` with ``given`` over it; where both hold a mapping, merged key by key."""
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def resolve_params(plugin: str, given: Mapping[str, Any] | None = None) -> Any:
    """The ``Params`` instance of ``plugin`` for a suite that sets ``given``."""
    declared = declared_params(plugin)
    if given is not None and not isinstance(given, Mapping):
        raise BenchError(f"plugin_params.{plugin}: expected a mapping, got {given!r}")
    return from_dict(declared, merged(to_dict(declared()), given or {}), f"plugin_params.{plugin}")


def params_dict(plugin: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``resolve_params`` as a plain dict (what config.json records)."""
    return to_dict(resolve_params(plugin, given))


def suite_params(suite) -> dict[str, dict[str, Any]]:
    """Every plugin of ``suite`` with its resolved parameters (plugins without any: {})."""
    return {plugin: params_dict(plugin, suite.plugin_params.get(plugin)) for plugin in suite.plugins}


def check_suite_params(suite) -> None:
    """At suite load: every plugin named in ``plugin_params`` exists, and every setting is
    declared and well typed (also for plugins the suite does not run: a typo is an error)."""
    for plugin in {*suite.plugins, *suite.plugin_params}:
        resolve_params(plugin, suite.plugin_params.get(plugin))
