"""Suite and recipe configuration: checked loading, checked ``--set`` overrides, and one
clear BenchError (naming the dotted key, or the YAML line) for every kind of bad input."""
from __future__ import annotations

import dataclasses
import math

import pytest

from bench.config.params import resolve_params
from bench.config.schema import Recipe, Suite
from bench.suites import load_suite, suite_names
from bench.core.errors import BenchError
from bench.core.typed import apply_overrides, from_dict, parse_override, to_dict
from lpc import GeometricSchedule, LinearRamp


def params(suite, plugin):
    """The resolved parameters of ``plugin`` in ``suite`` (its Params: suite values over defaults)."""
    return resolve_params(plugin, suite.plugin_params.get(plugin))


def error_of(*args, **kwargs) -> str:
    with pytest.raises(BenchError) as info:
        load_suite(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ----- the embedded default suite --------------------------------------------------------
def test_digits_is_embedded_and_complete():
    assert "digits" in suite_names()
    suite = load_suite("digits")
    assert suite.name == "digits" and suite.dataset.name == "digits" and suite.backbone.name == "mlp"
    assert len(suite.plugins) == 14 and len(suite.seeds) == 3
    controls = {"PGD-AT", "TRADES", "InputGradNorm"}   # positive controls, one seed each (cost)
    assert controls <= set(suite.plugins) and all(suite.seeds_of(c) == (0,) for c in controls)
    assert suite.plugin_params["PGD-AT"]["norm"] == "L2" and suite.plugin_params["PGD-AT"]["eps"] == 0.5
    assert set(suite.latent_widths) == {"narrow", "intermediate", "wide"}
    assert suite.latent_widths["narrow"] < suite.latent_widths["intermediate"] < suite.latent_widths["wide"]


def test_suite_round_trips_through_plain_dicts():
    suite = load_suite("digits")
    assert from_dict(Suite, to_dict(suite)) == suite


# ----- overrides that work ---------------------------------------------------------------
def test_set_recipe_epochs():
    suite = load_suite("digits", ["recipe.epochs=20"])
    assert suite.recipe.epochs == 20 and type(suite.recipe.epochs) is int
    assert load_suite("digits").recipe.epochs != 20          # the embedded suite is untouched


@pytest.mark.parametrize("text,key,value", [
    ("recipe.epochs=20", "recipe.epochs", 20),
    ("recipe.augment=crop_flip", "recipe.augment", "crop_flip"),
    ("seeds=[4, 5]", "seeds", (4, 5)),
    ("plugins=[LPC, NoPen]", "plugins", ("LPC", "NoPen")),
    ("dataset.limit_train=100", "dataset.limit_train", 100),
    ("dataset.limit_train=null", "dataset.limit_train", None),
    ("latent_widths.intermediate=24", "latent_widths", {"narrow": 8, "intermediate": 24, "wide": 32}),
    ("runtime.device=cpu", "runtime.device", "cpu"),
])
def test_overrides_are_converted_to_the_declared_type(text, key, value):
    suite = load_suite("digits", [text])
    got = suite
    for part in key.split("."):
        got = getattr(got, part)
    assert got == value and type(got) is type(value)


def test_later_overrides_win_and_values_may_contain_equals():
    assert load_suite("digits", ["recipe.epochs=3", "recipe.epochs=4"]).recipe.epochs == 4
    assert parse_override("description=a=b") == ("description", "a=b")


# ----- plugin parameters: declared by each plugin, set per plugin ----------------------
def test_the_suites_plugin_params_reach_each_plugin():
    suite = load_suite("digits")
    for plugin in ("LPC", "LPC-WIDE", "LPC-NARROW", "LPC-NoPen", "LPC-SCL"):
        assert params(suite, plugin).gamma == GeometricSchedule(1e-2, 1.05, 100.0)
    # a partial mapping keeps the declared defaults of what it does not set
    assert params(suite, "ArcFace").margin == LinearRamp(0.1, 0.5, 100)
    assert params(suite, "CosFace").scale == LinearRamp(16.0, 64.0, 100)
    assert params(suite, "SCL").supcon_temperature == 0.05 and params(suite, "NoPen") == resolve_params("NoPen")


@pytest.mark.parametrize("text,plugin,field,value", [
    ("plugin_params.LPC.gamma.cap=1e3", "LPC", "gamma", GeometricSchedule(1e-2, 1.05, 1000.0)),  # YAML: "1e3" is text
    ("plugin_params.LPC.gamma={start: 0.5, factor: 2, cap: 3}", "LPC", "gamma", GeometricSchedule(0.5, 2.0, 3.0)),
    ("plugin_params.LPC.per_dimension=true", "LPC", "per_dimension", True),
    ("plugin_params.ArcFace.scale.epochs=10", "ArcFace", "scale", LinearRamp(16.0, 64.0, 10)),
    ("plugin_params.SCL.supcon_weight=0.5", "SCL", "supcon_weight", 0.5),
    ("plugin_params.LPC.gamma.cap=.inf", "LPC", "gamma", GeometricSchedule(1e-2, 1.05, math.inf)),
])
def test_plugin_params_overrides_are_converted_to_the_declared_type(text, plugin, field, value):
    got = getattr(params(load_suite("digits", [text]), plugin), field)
    assert got == value and type(got) is type(value)
    assert params(load_suite("digits"), "LPC-WIDE").gamma.cap == 100.0   # other plugins are untouched


@pytest.mark.parametrize("text,needle", [
    ("plugin_params.LPC.gama.cap=1", "unknown key plugin_params.LPC.gama (known: gamma, per_dimension)"),
    ("plugin_params.NoPen.lam=1", "unknown key plugin_params.NoPen.lam"),
    ("plugin_params.LPC.per_dimension=maybe", "plugin_params.LPC.per_dimension: expected true/false"),
    ("plugin_params.LPC.gamma.start=abc", "plugin_params.LPC.gamma.start: expected a number"),
    ("plugin_params.LPC.gamma.start=nan", "plugin_params.LPC.gamma"),
    ("plugin_params.LPC.gamma.start=.inf", "plugin_params.LPC.gamma"),
    ("plugin_params.LPC.gamma.cap=-1", "plugin_params.LPC.gamma"),
    ("plugin_params.ArcFace.margin=[0.1, 0.5]", "plugin_params.ArcFace.margin: expected a mapping"),
    ("plugin_params.LPCX.gamma.cap=1", "unknown plugin 'LPCX'"),
    ("plugin_params.LPC=3", "plugin_params.LPC"),
])
def test_bad_plugin_params_name_the_dotted_key(text, needle):
    assert needle in error_of("digits", [text])


@pytest.mark.parametrize("key,where", [("recipe.gamma_cap", "plugin_params.LPC.gamma.cap"),
                                       ("recipe.margin_ramp_epochs", "plugin_params.ArcFace.margin.epochs"),
                                       ("recipe.penalty_per_dimension", "plugin_params.LPC.per_dimension")])
def test_a_moved_recipe_key_says_where_it_lives_now(key, where):
    message = error_of("digits", [f"{key}=3"])
    assert key in message and where in message


def test_a_suite_written_with_the_old_recipe_keys_loads_with_the_same_parameters(tmp_path):
    """Documented migration (bench.config.migrate): the recipe's old plugin fields become the
    plugins' parameters, the old recipe's defaults where a key was not written."""
    path = tmp_path / "old.yaml"
    path.write_text("name: old\nplugins: [LPC, LPC-SCL, ArcFace, NoPen]\nrecipe:\n  epochs: 7\n  gamma_cap: 1e3\n"
                    "  supcon_weight: 0.5\n  margin_ramp_epochs: 20\n"
                    "plugin_params:\n  LPC: {per_dimension: true}\n")
    suite = load_suite(str(path))
    assert suite.recipe.epochs == 7
    assert params(suite, "LPC") == resolve_params("LPC", {"gamma": {"cap": 1000.0}, "per_dimension": True})
    assert params(suite, "LPC-SCL").supcon_weight == 0.5 and params(suite, "LPC-SCL").gamma.cap == 1000.0
    assert params(suite, "ArcFace").margin == LinearRamp(0.1, 0.5, 20)
    assert params(suite, "ArcFace").scale == LinearRamp(16.0, 64.0, 20)


@pytest.mark.parametrize("epoch,factor", [(0, 1.0), (99, 1.0), (100, 0.5), (124, 0.5), (125, 0.25), (149, 0.25), (150, 0.125)])
def test_lr_halves_every_n_epochs_from_m(epoch, factor):
    recipe = Recipe(lr_decay_start=100, lr_decay_every=25, lr_decay_factor=0.5)
    assert recipe.lr_factor(epoch) == factor


# ----- bad overrides ---------------------------------------------------------------------
@pytest.mark.parametrize("text,needle", [
    ("recipe.epochz=3", "recipe.epochz"),
    ("recipes.epochs=3", "recipes"),
    ("epochs=3", "epochs"),
    ("recipe.epochs.deeper=3", "recipe.epochs"),
    ("dataset.nope=1", "dataset.nope"),
])
def test_unknown_override_key_names_the_dotted_key(text, needle):
    message = error_of("digits", [text])
    assert needle in message and "unknown" in message or "no sub-keys" in message


@pytest.mark.parametrize("text,key", [
    ("recipe.epochs=abc", "recipe.epochs"),
    ("recipe.epochs=1.5", "recipe.epochs"),
    ("recipe.epochs=true", "recipe.epochs"),
    ("recipe.epochs=[1]", "recipe.epochs"),
    ("recipe.epochs=", "recipe.epochs"),
    ("recipe.augment=rotate", "recipe.augment"),
    ("seeds=abc", "seeds"),
    ("seeds=[0, x]", "seeds[1]"),
    ("latent_widths.intermediate=abc", "latent_widths.intermediate"),
    ("runtime.amp=fp8", "runtime.amp"),
    ("recipe=3", "recipe"),
])
def test_wrong_type_names_the_dotted_key(text, key):
    message = error_of("digits", [text])
    assert message.startswith(f"{key}:") or f" {key}" in message, message
    assert "expected" in message


@pytest.mark.parametrize("text,key", [
    ("recipe.epochs=0", "recipe.epochs"),
    ("recipe.epochs=-1", "recipe.epochs"),
    ("recipe.batch_size=0", "recipe.batch_size"),
    ("recipe.weight_decay=-1", "recipe.weight_decay"),
    ("recipe.lr_decay_factor=nan", "recipe.lr_decay_factor"),
    ("recipe.lr_decay_factor=inf", "recipe.lr_decay_factor"),
    ("dataset.val_fraction=2", "dataset.val_fraction"),
    ("dataset.limit_train=0", "dataset.limit_train"),
])
def test_out_of_range_values_name_the_key(text, key):
    assert key in error_of("digits", [text])


def test_an_infinite_gamma_cap_is_allowed():
    assert params(load_suite("digits", ["plugin_params.LPC.gamma.cap=.inf"]), "LPC").gamma.cap == math.inf


@pytest.mark.parametrize("text", ["recipe.epochs", "=3", "   =3"])
def test_override_without_key_or_value_is_an_error(text):
    assert "key=value" in error_of("digits", [text])


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "..", ""])
def test_suite_name_must_not_escape_the_output_root(name):
    assert "suite name" in error_of("digits", [f"name={name}"] if name else ["name=''"])


def test_apply_overrides_returns_a_new_object():
    recipe = Recipe()
    changed = apply_overrides(recipe, ["epochs=5"])
    assert changed.epochs == 5 and recipe.epochs == Recipe().epochs
    assert dataclasses.replace(changed, epochs=recipe.epochs) == recipe


# ----- unknown names ---------------------------------------------------------------------
def test_unknown_suite_lists_the_builtin_ones():
    message = error_of("no-such-suite")
    assert "unknown suite 'no-such-suite'" in message and "digits" in message


def test_missing_suite_file():
    assert "does not exist" in error_of("/nonexistent/suite.yaml")


@pytest.mark.parametrize("text,needle", [
    ("plugins=[LPC, NOPE]", "unknown plugin 'NOPE'"),
    ("plugins=[LPC-WID]", "LPC-WIDE"),                 # close matches are suggested
    ("backbone.name=vgg", "unknown backbone 'vgg'"),
    ("dataset.name=mnist", "unknown dataset 'mnist'"),
    ("evaluation.evaluators=[nope]", "unknown evaluator 'nope'"),
    ("plugins=[]", "at least one plugin"),
    ("seeds=[1, 1]", "must not repeat"),
    ("lrs=[0]", "learning rates"),
])
def test_unknown_or_inconsistent_names(text, needle):
    assert needle in error_of("digits", [text])


def test_plugin_without_its_latent_width(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nplugins: [LPC-WIDE]\nlatent_widths: {narrow: 2, intermediate: 4}\n")
    assert "latent_widths.wide" in error_of(str(path))


# ----- suite files -----------------------------------------------------------------------
def test_a_yaml_file_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nplugins: [LPC, NoPen]\nseeds: [3]\nrecipe:\n  epochs: 7\n"
                    "plugin_params:\n  LPC: {gamma: {cap: 1e3}}\n")
    suite = load_suite(str(path), ["recipe.batch_size=32"])
    assert (suite.name, suite.plugins, suite.seeds) == ("mine", ("LPC", "NoPen"), (3,))
    assert (suite.recipe.epochs, params(suite, "LPC").gamma.cap, suite.recipe.batch_size) == (7, 1000.0, 32)


@pytest.mark.parametrize("text,line", [
    ("name: x\nplugins: [LPC\nseeds: [0]\n", 3),
    ("name: x\nplugins: [LPC]\nrecipe:\n  epochs: 3\n    batch_size: 4\n", 5),
    ("name: x\n\tplugins: [LPC]\n", 2),
    ("name: 'x\nplugins: [LPC]\n", 3),
])
def test_malformed_yaml_names_the_line(tmp_path, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    message = error_of(str(path))
    assert "not valid YAML" in message and f"line {line}" in message, message


@pytest.mark.parametrize("text,needle", [
    ("", "must be a YAML mapping"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("plugins: [LPC]\n", "name"),
    ("name: x\nplugins: [LPC]\nrecipe:\n  epochs: 2\n  foo: 1\n", "recipe.foo"),
    ("name: x\nplugins: [LPC]\nrecipe:\n  epochs: abc\n", "recipe.epochs"),
    ("name: x\nplugins: [LPC]\nbogus: 1\n", "bogus"),
    ("name: x\nplugins: [LPCC]\n", "unknown plugin 'LPCC'"),
])
def test_bad_suite_file_contents(tmp_path, text, needle):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert needle in error_of(str(path))


@pytest.mark.parametrize("order, ok", [
    ("[deepfool, attacks, best_known]", True),
    ("[best_known, deepfool, attacks]", False),
    ("[deepfool, best_known]", False),
])
def test_an_evaluator_must_come_after_those_it_reads(order, ok):
    # best_known reads DeepFool's and the attacks' results: caught at load, not after training
    overrides = [f"evaluation.evaluators={order}"]
    if ok:
        assert load_suite("digits", overrides).evaluation.evaluators[-1] == "best_known"
    else:
        with pytest.raises(BenchError, match="'best_known' needs"):
            load_suite("digits", overrides)
