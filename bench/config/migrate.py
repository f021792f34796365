"""Suites and run configs written before plugins owned their parameters, read as today's.

Until plugin parameters moved into each plugin's ``Params`` (set per plugin under the
suite's ``plugin_params``), the shared ``recipe`` carried them for every plugin:

    recipe.gamma_start / gamma_factor / gamma_cap   → <LPC family>.gamma.{start,factor,cap}
    recipe.penalty_per_dimension                    → <LPC family>.per_dimension
    recipe.supcon_temperature / supcon_weight       → LPC-SCL, SCL: supcon_temperature / supcon_weight
    recipe.arcface_margin [a, b], cosface_margin    → ArcFace / CosFace: margin {start: a, end: b, epochs}
    recipe.margin_scale [a, b]                      → ArcFace, CosFace: scale {start: a, end: b, epochs}
    recipe.margin_ramp_epochs                       → the ``epochs`` of both ramps

``migrate_suite_dict`` rewrites a suite mapping of that shape (a YAML file, the "suite"
of an old config.json, a baseline's "suite_config") into the current one, with the values
those runs were trained with (the old recipe's defaults where a key was not written). A
value set explicitly under ``plugin_params`` wins over a legacy recipe key. The mapping
is what the built-in plugins received by constructor name at the time; a third-party
plugin received nothing from the recipe except under those same names, and gets nothing.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from bench.config.params import merged

# the recipe's plugin fields and their defaults, as the last recipe that had them
LEGACY_RECIPE = {
    "gamma_start": 1e-2, "gamma_factor": 1.05, "gamma_cap": 1e6, "penalty_per_dimension": False,
    "supcon_temperature": 0.05, "supcon_weight": 1.0,
    "arcface_margin": [0.1, 0.5], "cosface_margin": [0.05, 0.25], "margin_scale": [16.0, 64.0],
    "margin_ramp_epochs": 250,
}
LPC_FAMILY = ("LPC", "LPC-WIDE", "LPC-NARROW", "LPC-NoPen", "LPC-SCL")
SUPCON = ("LPC-SCL", "SCL")
MARGIN = {"ArcFace": "arcface_margin", "CosFace": "cosface_margin"}


def _ramp(pair, epochs) -> dict:
    return {"start": pair[0], "end": pair[1], "epochs": epochs}


def legacy_params(plugin: str, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a built-in plugin got from an old recipe."""
    r = {**LEGACY_RECIPE, **{k: v for k, v in recipe.items() if k in LEGACY_RECIPE}}
    params: dict[str, Any] = {}
    if plugin in LPC_FAMILY:
        params["gamma"] = {"start": r["gamma_start"], "factor": r["gamma_factor"], "cap": r["gamma_cap"]}
        params["per_dimension"] = r["penalty_per_dimension"]
    if plugin in SUPCON:
        params["supcon_temperature"] = r["supcon_temperature"]
        params["supcon_weight"] = r["supcon_weight"]
    if plugin in MARGIN:
        params["margin"] = _ramp(r[MARGIN[plugin]], r["margin_ramp_epochs"])
        params["scale"] = _ramp(r["margin_scale"], r["margin_ramp_epochs"])
    return params


def migrate_suite_dict(suite: Mapping[str, Any]) -> dict[str, Any]:
    """A suite mapping in today's shape (a copy; an already current mapping comes back equal)."""
    out = copy.deepcopy(dict(suite))
    recipe = out.get("recipe")
    if not isinstance(recipe, dict) or not set(recipe) & set(LEGACY_RECIPE):
        return out
    legacy = {k: recipe.pop(k) for k in list(recipe) if k in LEGACY_RECIPE}
    given = out.get("plugin_params") or {}
    params = {}
    for plugin in out.get("plugins") or ():
        from_recipe = legacy_params(plugin, legacy)
        explicit = given.get(plugin) or {}
        if from_recipe or explicit:
            params[plugin] = merged(from_recipe, explicit) if isinstance(explicit, Mapping) else explicit
    for plugin, value in given.items():
        params.setdefault(plugin, value)
    out["plugin_params"] = params
    return out


def moved_key_hint(key: str) -> str | None:
    """For an override of a key that moved (``recipe.gamma_cap``), where it lives now."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] != "recipe" or parts[1] not in LEGACY_RECIPE:
        return None
    where = {"gamma_start": "plugin_params.LPC.gamma.start", "gamma_factor": "plugin_params.LPC.gamma.factor",
             "gamma_cap": "plugin_params.LPC.gamma.cap", "penalty_per_dimension": "plugin_params.LPC.per_dimension",
             "supcon_temperature": "plugin_params.SCL.supcon_temperature",
             "supcon_weight": "plugin_params.SCL.supcon_weight",
             "arcface_margin": "plugin_params.ArcFace.margin", "cosface_margin": "plugin_params.CosFace.margin",
             "margin_scale": "plugin_params.ArcFace.scale", "margin_ramp_epochs": "plugin_params.ArcFace.margin.epochs"}
    return (f"{key} is now a plugin's own parameter: set it per plugin, e.g. {where[parts[1]]} "
            f"(each plugin's parameters: bench list plugins)")
