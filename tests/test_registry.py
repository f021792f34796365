"""The plugin registry: every registered plugin smoke-tested, registration, look-up errors,
overrides, and third-party discovery through the ``lpc_bench.plugins`` entry-point group."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from registry import (PLUGINS, HeadOutput, Plugin, Registry, UnknownNameError, create_plugin,
                      get_plugin_class, list_plugins, register_plugin)

from conftest import cli_env

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

BUILTINS = {  # name -> its named loss terms (without "total")
    "NoPen": {"ce"}, "LinPen": {"ce"}, "NonlinPen": {"ce"},
    "LPC": {"ce", "penalty"}, "LPC-WIDE": {"ce", "penalty"}, "LPC-NARROW": {"ce", "penalty"},
    "LPC-NoPen": {"ce", "penalty"}, "LPC-SCL": {"ce", "penalty", "supcon"},
    "SCL": {"ce", "supcon"}, "ArcFace": {"arcface"}, "CosFace": {"cosface"},
}
CONTROLS = {  # the positive controls and LPC + PGD-AT: their losses use the input and the model
    "PGD-AT": {"adv_ce"}, "TRADES": {"ce", "trades_kl"}, "InputGradNorm": {"ce", "grad_norm"},
    "LPC-PGD-AT": {"penalty", "adv_ce"},
}
FEATURES, CLASSES, BATCH = 11, 4, 12
WIDTHS = {"narrow": 3, "intermediate": 5, "wide": 7}   # all different, and different from FEATURES


def build(name: str, **overrides) -> Plugin:
    torch.manual_seed(0)
    return create_plugin(name, FEATURES, CLASSES, WIDTHS, **overrides)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(BATCH, FEATURES, generator=g, requires_grad=True)
    y = torch.arange(BATCH) % CLASSES          # every class three times: SupCon has positives
    return h, y


def builtin_names() -> list[str]:
    """The plugins this package ships (an installed third-party plugin is not one of them)."""
    return [n for n in list_plugins() if get_plugin_class(n).__module__.startswith("registry.plugins")]


# ----- every registered plugin (built-in or third-party) ---------------------------------
def test_the_eleven_builtins_and_the_controls_are_registered():
    assert set(builtin_names()) == set(BUILTINS) | set(CONTROLS) and len(BUILTINS) == 11
    assert all(get_plugin_class(n).uses_input() for n in CONTROLS)
    assert not any(get_plugin_class(n).uses_input() for n in BUILTINS)


def input_side_batch(plugin: Plugin, h: torch.Tensor, y: torch.Tensor):
    """(h, Batch) for a plugin whose loss needs the input: a linear 'backbone' x -> h with x in
    [0, 1] (the plugin's head on top), so that h depends on x as in a Classifier."""
    from torch import nn
    from registry import Batch
    g = torch.Generator().manual_seed(1)
    x = torch.rand(h.shape[0], 6, generator=g, requires_grad=plugin.input_grad)
    backbone = nn.Linear(6, FEATURES)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = backbone, plugin

        def forward_all(self, inputs):
            return self.head(self.backbone(inputs))

        def forward(self, inputs):
            return self.forward_all(inputs).logits
    model = Model()
    features = backbone(x)
    features.retain_grad()
    return features, Batch(x=x, y=y, model=model, seed=0)


@pytest.mark.parametrize("name", list_plugins())
def test_plugin_forward_backward_and_named_terms(name):
    plugin = build(name)
    plugin.train()
    h, y = batch()
    inputs = None
    if plugin.uses_input():
        h, inputs = input_side_batch(plugin, h, y)
    out = plugin(h)
    assert isinstance(out, HeadOutput)
    expected_d = WIDTHS[plugin.latent_width] if plugin.latent_width else FEATURES
    assert out.logits.shape == (BATCH, CLASSES)
    assert out.latent.shape == (BATCH, expected_d)
    assert plugin.latent_dim == (expected_d if plugin.latent_width else None)
    assert out.features is h

    terms = plugin.loss(out, y, inputs)
    assert "total" in terms and len(terms) >= 2
    if name in BUILTINS or name in CONTROLS:
        assert set(terms) - {"total"} == {**BUILTINS, **CONTROLS}[name]
    for term, value in terms.items():
        assert value.dim() == 0, term
        assert torch.isfinite(value), term
    parts = torch.stack([v.double() for k, v in terms.items() if k != "total"]).sum()
    assert float(terms["total"].detach()) == pytest.approx(float(parts.detach()), rel=1e-6, abs=1e-6)

    terms["total"].backward()
    if inputs is None:
        assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    else:  # PGD-AT's loss is on x_adv alone: the gradient reaches the backbone, not the clean h
        grad = inputs.model.backbone.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    for pname, p in plugin.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in plugin.classifier.parameters())


@pytest.mark.parametrize("name", list_plugins())
def test_plugin_schedule_values_are_floats_at_every_epoch(name):
    plugin = build(name)
    for epoch in (0, 1, 50, 1000):
        plugin.set_epoch(epoch)
        values = plugin.schedule_values()
        assert isinstance(values, dict)
        for key, value in values.items():
            assert type(value) is float and math.isfinite(value), (key, value)


@pytest.mark.parametrize("name", builtin_names())
def test_plugin_docstring_starts_with_the_paper(name):
    """The project's style for its own plugins (a third-party plugin is free to differ)."""
    doc = (get_plugin_class(name).__doc__ or "").strip()
    first_paragraph = doc.split("\n\n")[0]
    assert doc.startswith(name), f"{name}: docstring should open with the model's name"
    cites = re.search(r"arXiv \d{4}\.\d{4,5}|et al\.,? [^)]*\d{4}", first_paragraph)
    assert cites, f"{name}: first paragraph of the docstring cites no paper: {first_paragraph!r}"


@pytest.mark.parametrize("name", list_plugins())
def test_plugin_parameters_are_declared_with_defaults(name):
    """Every plugin's ``Params`` is a dataclass buildable without a suite, and a plugin built
    with non-default parameters holds exactly those."""
    import dataclasses
    cls = get_plugin_class(name)
    assert dataclasses.is_dataclass(cls.Params)
    plugin = build(name)
    assert plugin.params == cls.Params()
    for field in dataclasses.fields(cls.Params):
        default = getattr(plugin.params, field.name)
        if isinstance(default, bool):
            assert build(name, **{field.name: not default}).params == dataclasses.replace(
                cls.Params(), **{field.name: not default})


@pytest.mark.parametrize("name", list_plugins())
def test_plugin_eval_mode_and_no_grad(name):
    plugin = build(name).eval()
    h, _ = batch(1)
    with torch.no_grad():
        a, b = plugin(h).logits, plugin(h).logits
    torch.testing.assert_close(a, b)


def test_builtin_schedules_follow_the_epoch():
    lpc = build("LPC")
    assert lpc.schedule_values() == {"gamma": pytest.approx(1e-2)}
    lpc.set_epoch(10)
    assert lpc.schedule_values()["gamma"] == pytest.approx(1e-2 * 1.05 ** 10)
    arc = build("ArcFace")   # the default ramps: 250 epochs (one value, in the plugin's Params)
    assert arc.schedule_values() == {"margin": pytest.approx(0.1), "scale": pytest.approx(16.0)}
    arc.set_epoch(250)
    assert arc.schedule_values() == {"margin": pytest.approx(0.5), "scale": pytest.approx(64.0)}
    cos = build("CosFace")
    cos.set_epoch(125)
    assert cos.schedule_values() == {"margin": pytest.approx(0.15), "scale": pytest.approx(40.0)}


@pytest.mark.parametrize("name", ["ArcFace", "CosFace"])
def test_margin_plugins_document_scaled_cosine_inference_logits(name):
    doc = get_plugin_class(name).__doc__
    assert "scaled cosines" in doc and "Inference logits" in doc


def test_latent_width_comes_from_the_suite_widths():
    for name, width in (("LPC", 5), ("LPC-WIDE", 7), ("LPC-NARROW", 3), ("LinPen", 5), ("NonlinPen", 5)):
        assert build(name).latent_dim == width
    with pytest.raises(ValueError, match="intermediate"):
        create_plugin("LPC", FEATURES, CLASSES, {"narrow": 3})


# ----- registration ----------------------------------------------------------------------
def test_decorator_registers_under_a_name_or_the_object_name():
    reg: Registry = Registry("thing")

    @reg.register("Alpha")
    class A:
        pass

    @reg.register()
    def beta():
        return "b"

    assert reg.names() == ["Alpha", "beta"]
    assert reg.get("Alpha") is A and reg.create("beta") == "b"
    assert "Alpha" in reg and list(reg) == ["Alpha", "beta"]


def test_overwriting_warns_and_keeps_the_newer_entry():
    reg: Registry = Registry("thing")
    reg.add("x", 1)
    with pytest.warns(RuntimeWarning, match="already registered"):
        reg.add("x", 2)
    assert reg.get("x") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.add("x", 2)  # the same object again: no warning


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as info:
        get_plugin_class("LPC-WID")
    message = str(info.value)
    assert "unknown plugin 'LPC-WID'" in message and "did you mean" in message and "LPC-WIDE" in message
    assert isinstance(info.value, KeyError) and not message.startswith('"')
    with pytest.raises(UnknownNameError, match="known: "):
        create_plugin("Zzzzzz", FEATURES, CLASSES, WIDTHS)


def test_create_plugin_passes_overrides_and_rejects_bad_ones():
    from lpc import ConstantSchedule
    lpc = build("LPC", gamma=ConstantSchedule(7.0), per_dimension=True)
    assert lpc.schedule_values() == {"gamma": 7.0} and lpc.params.per_dimension
    with pytest.raises(ValueError, match=r"plugin 'LPC': unknown parameter.*gamma_typo.*declared: gamma, per_dimension"):
        build("LPC", gamma_typo=1.0)
    with pytest.raises(ValueError, match="NoPen.*declared: none"):
        build("NoPen", gamma=ConstantSchedule(1.0))


def test_the_lpc_plugins_are_the_lpc_librarys_head_and_penalty(monkeypatch):
    """LPC's layers are an ``lpc.LPCHead``'s and its forward is that head's: a change to the
    library's head changes the benchmarked plugin."""
    import lpc
    plugin = build("LPC")
    assert isinstance(plugin.lpc_head, lpc.LPCHead)
    assert plugin.penultimate is plugin.lpc_head.latent and plugin.classifier is plugin.lpc_head.classifier
    assert plugin.classifier.bias is None
    assert sorted(plugin.state_dict()) == ["classifier.weight", "penultimate.bias", "penultimate.weight"]
    h, y = batch()
    z, logits = plugin.lpc_head(h)
    out = plugin(h)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.latent, z)
    calls = []
    original = lpc.LPCHead.forward
    monkeypatch.setattr(lpc.LPCHead, "forward", lambda self, x: calls.append(1) or original(self, x))
    plugin(h)
    assert calls == [1]
    penalty = plugin.loss(out, y)["penalty"]
    assert float(penalty) == pytest.approx(float(lpc.latent_penalty(out.latent, 1e-2)), rel=1e-6)


def test_a_params_declaration_is_checked_at_registration(scratch_plugin):
    import dataclasses

    class NotADataclass(Plugin):
        class Params:
            lam = 1.0

    with pytest.raises(TypeError, match="must be a dataclass"):
        scratch_plugin("Test-Bad1", NotADataclass)

    class NoDefault(Plugin):
        @dataclasses.dataclass(frozen=True)
        class Params:
            lam: float

    with pytest.raises(TypeError, match="needs a default"):
        scratch_plugin("Test-Bad2", NoDefault)
    assert "Test-Bad1" not in list_plugins() and "Test-Bad2" not in list_plugins()


@pytest.fixture
def scratch_plugin():
    """Registers plugins under throw-away names and removes them afterwards."""
    names = []

    def add(name, cls):
        names.append(name)
        return register_plugin(name)(cls)
    yield add
    for name in names:
        PLUGINS.remove(name)


def test_register_plugin_makes_a_new_regularizer_usable(scratch_plugin):
    import dataclasses

    class L1Pen(Plugin):
        """L1Pen (test): CE + λ‖h‖₁."""

        @dataclasses.dataclass(frozen=True)
        class Params:
            lam: float = 1e-3

        def loss_terms(self, out, y):
            return {"ce": self.cross_entropy(out, y), "l1": self.params.lam * out.features.abs().sum(1).mean()}

    scratch_plugin("Test-L1Pen", L1Pen)
    assert "Test-L1Pen" in list_plugins()
    plugin = create_plugin("Test-L1Pen", FEATURES, CLASSES, lam=0.5)
    h, y = batch()
    terms = plugin.loss(plugin(h), y)
    assert set(terms) == {"ce", "l1", "total"}
    assert float(terms["l1"]) == pytest.approx(0.5 * float(h.abs().sum(1).mean()), rel=1e-6)
    with pytest.warns(RuntimeWarning, match="Test-L1Pen"):
        scratch_plugin("Test-L1Pen", type("Other", (Plugin,), {}))


def test_a_plugin_may_not_return_total(scratch_plugin):
    class Cheat(Plugin):
        def loss_terms(self, out, y):
            return {"ce": self.cross_entropy(out, y), "total": torch.zeros(())}

    scratch_plugin("Test-Cheat", Cheat)
    plugin = create_plugin("Test-Cheat", FEATURES, CLASSES)
    h, y = batch()
    with pytest.raises(ValueError, match="total"):
        plugin.loss(plugin(h), y)


# ----- third-party discovery (a real installed distribution on sys.path) -----------------
TOY_MODULE = '''
"""A third-party plugin package, as someone would pip-install it."""
import torch
from registry import Plugin, register_plugin


class ToyPen(Plugin):
    """ToyPen (Nobody et al., Test 2024): CE + 0.1·‖h‖²; exposed as an entry-point object."""

    def loss_terms(self, out, y):
        return {"ce": self.cross_entropy(out, y), "toy": 0.1 * out.features.pow(2).sum(1).mean()}


@register_plugin("ToyDecorated")
class ToyDecorated(Plugin):
    """ToyDecorated (Nobody et al., Test 2024): registered by importing the module."""
'''


def make_distribution(root, entry_points: str) -> None:
    """``toy_lpc_plugins`` + its dist-info, as pip would leave them in site-packages."""
    (root / "toy_lpc_plugins.py").write_text(TOY_MODULE)
    info = root / "toy_lpc_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-lpc-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (info / "RECORD").write_text("")


ENTRY_POINTS = textwrap.dedent("""\
    [lpc_bench.plugins]
    ToyPen = toy_lpc_plugins:ToyPen
    toy_module = toy_lpc_plugins
    Broken = toy_lpc_plugins_missing:Nothing
    """)


def test_entry_points_are_discovered_in_a_fresh_registry(tmp_path, monkeypatch):
    make_distribution(tmp_path, ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_lpc_plugins", raising=False)
    reg: Registry = Registry("plugin", entry_point_group="lpc_bench.plugins")
    reg.add("Builtin", object)
    try:
        with pytest.warns(RuntimeWarning, match="Broken"):   # a broken package warns, never breaks
            names = reg.names()
        assert "ToyPen" in names and "Builtin" in names and "Broken" not in names
        assert "toy_module" not in names                    # a module is imported, not registered
        assert reg.get("ToyPen").__name__ == "ToyPen"
    finally:  # importing the module registered ToyDecorated in the global registry
        PLUGINS.remove("ToyDecorated")
        sys.modules.pop("toy_lpc_plugins", None)


def test_an_entry_point_named_like_a_registered_plugin_warns_and_is_ignored(tmp_path, monkeypatch):
    make_distribution(tmp_path, "[lpc_bench.plugins]\nLPC = toy_lpc_plugins:ToyPen\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_lpc_plugins", raising=False)
    reg: Registry = Registry("plugin", entry_point_group="lpc_bench.plugins")
    builtin = PLUGINS.get("LPC")
    reg.add("LPC", builtin)
    try:
        with pytest.warns(RuntimeWarning, match="'LPC'.*keeping the registered one"):
            reg.names()
        assert reg.get("LPC") is builtin
    finally:
        PLUGINS.remove("ToyDecorated")
        sys.modules.pop("toy_lpc_plugins", None)


def test_entry_points_reach_list_plugins_and_the_cli(tmp_path):
    """A new interpreter with the toy distribution installed: both styles of entry point work
    end to end (listed, built, trained one step), and ``bench list`` shows them."""
    make_distribution(tmp_path, ENTRY_POINTS)
    script = textwrap.dedent("""
        import json, sys, warnings
        import torch
        warnings.simplefilter("ignore")
        from registry import create_plugin, list_plugins
        names = list_plugins()
        out = {"names": names, "needs_bench": "bench" in sys.modules}  # registry stands alone
        from bench.cli.main import main
        for name in ("ToyPen", "ToyDecorated"):
            plugin = create_plugin(name, 6, 3)
            h = torch.randn(9, 6, requires_grad=True)
            terms = plugin.loss(plugin(h), torch.arange(9) % 3)
            terms["total"].backward()
            out[name] = sorted(terms)
        print(json.dumps(out))
        main(["list"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env([str(tmp_path)]),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    listing = next(line for line in proc.stdout.splitlines() if line.startswith("plugins:"))
    got = json.loads(first)
    assert {"ToyPen", "ToyDecorated"} <= set(got["names"]) and set(BUILTINS) <= set(got["names"])
    assert got["ToyPen"] == ["ce", "total", "toy"] and got["ToyDecorated"] == ["ce", "total"]
    assert got["needs_bench"] is False
    assert listing.startswith("plugins:") and "ToyPen" in listing and "ToyDecorated" in listing
