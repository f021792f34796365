"""One evaluation entry point: the suite's evaluators on any model, trained here or not.

``evaluation_context`` is the only builder of an EvalContext: the trainer's
``evaluate_run``, the estimate's ``time_evaluators`` and ``evaluate`` (a model the harness
did not train) all go through it. ``evaluate(model, suite=..., latent=..., data=(x, y),
runs=DIR, name=NAME)`` checks the model first (``bench.models.checks``), runs the suite's
evaluators and returns the result record of a trained run; with ``runs`` it writes one run
folder (``<runs>/<suite>/<name>/seed0-lr0``) marked ``"origin": "evaluated"``, which the
report, ``bench check`` and the exports read like any other.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from bench.core import io
from bench.core.errors import BenchError
from bench.evaluation.figure_data import latent_histograms
from bench.evaluation.hook import EVALUATORS, EvalContext, attack_subset, run_evaluators
from bench.evaluation.inference import outputs
from bench.runs import folder
from bench.runs.folder import RESULT_SCHEMA, RunSpec
from bench.suites.imports import load_builtin_evaluators

EVALUATED = "evaluated"   # result.json "origin" of a model the harness did not train


@dataclass(frozen=True)
class EvalData:
    """Test data (and optionally the training split the latent metrics need) of an evaluation."""

    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    pixel_scale: float = 1.0
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    def split(self, name: str):
        x, y = getattr(self, f"{name}_x"), getattr(self, f"{name}_y")
        return None if x is None else (x, y)

    @classmethod
    def from_splits(cls, splits) -> "EvalData":
        return cls(splits.test_x, splits.test_y, splits.num_classes, splits.pixel_scale,
                   splits.train_x, splits.train_y, splits.val_x, splits.val_y)


class _Out:
    __slots__ = ("logits", "latent")

    def __init__(self, logits, latent):
        self.logits, self.latent = logits, latent


class LatentProbe(nn.Module):
    """Any logits model, with ``forward_all(x)`` giving ``.logits`` and ``.latent``: the output of
    the module named ``latent`` (a forward hook), or of a callable ``latent(x)``."""

    def __init__(self, model: nn.Module, latent: str | Callable[[torch.Tensor], torch.Tensor] | None):
        super().__init__()
        self.inner = model
        self.latent_fn = latent if callable(latent) else None
        self.latent_module = None
        if isinstance(latent, str):
            modules = dict(model.named_modules())
            if latent not in modules or latent == "":
                names = [n for n in modules if n]
                raise BenchError(f"no module {latent!r} in the model; its modules: {', '.join(names) or '(none)'}")
            self.latent_module = modules[latent]
            if isinstance(self.latent_module, torch.jit.ScriptModule):
                raise BenchError(f"latent layer {latent!r}: a TorchScript module cannot be hooked; give the model "
                                 f"as a torch.export .pt2 or as module:factory with --weights")

    def train(self, mode: bool = True):
        self.training = mode
        try:
            self.inner.train(mode)
        except (RuntimeError, NotImplementedError):  # a torch.export module: its mode was fixed when exported
            pass
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def forward_all(self, x: torch.Tensor) -> _Out:
        if self.latent_fn is not None:
            return _Out(self.inner(x), self.latent_fn(x).flatten(1))
        if self.latent_module is None:
            raise BenchError("no latent layer was given")
        seen: list[torch.Tensor] = []
        handle = self.latent_module.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            logits = self.inner(x)
        finally:
            handle.remove()
        if not seen:
            raise BenchError("the latent layer was not called by the model's forward (a torch.export program "
                             "keeps no module calls: use its unflattened form or a TorchScript/factory model)")
        return _Out(logits, seen[-1].flatten(1))


def needs_latents(name: str) -> bool:
    """Whether an evaluator reads latents (the metrics, collapse under attack)."""
    return EVALUATORS.get(name).kind == "metric" or name == "attack_collapse"


def evaluation_context(model: nn.Module, data, *, subset_size: int, subset_seed: int, device: torch.device,
                       batch_size: int, amp: str = "off", latents: bool = True, latent_name: str = "z",
                       num_classes: int | None = None, num_threads: int | None = None,
                       classifier_weight: torch.Tensor | None = None, rows_normalised: bool = False,
                       quiet: bool = True) -> tuple[EvalContext, dict[str, float]]:
    """(EvalContext, accuracy per split) of ``model`` on every split ``data`` has."""
    load_builtin_evaluators()
    # Trained in channels_last on CUDA, a conv net returns input gradients in that layout, and
    # third-party attacks flatten them with .view (torchattacks' PGDL2 fails): attack it contiguous.
    model.eval().to(memory_format=torch.contiguous_format)
    zs, predictions, labels, accuracy = {}, {}, {}, {}
    for split in ("train", "val", "test"):
        pair = data.split(split)
        if pair is None:
            continue
        x, y = pair
        logits, z = outputs(model, x, device=device, batch_size=batch_size, pixel_scale=data.pixel_scale,
                            latents=latents, amp=amp)
        predictions[split], labels[split] = logits.argmax(1), y
        if z is not None:
            zs[split] = z
        accuracy[split] = float((predictions[split] == y).float().mean())
    ctx = EvalContext(model=model, data=data, device=device, latents=zs, labels=labels, predictions=predictions,
                      subset=attack_subset(data.test_y.shape[0], subset_size, subset_seed), latent_name=latent_name,
                      num_classes=num_classes, num_threads=num_threads or None,
                      classifier_weight=classifier_weight, classifier_rows_normalised=rows_normalised, quiet=quiet)
    return ctx, accuracy


def classifier_context(suite, model, data, device, quiet: bool = True) -> tuple[EvalContext, dict[str, float]]:
    """evaluation_context for a harness Classifier (its plugin gives the latent and NC3's weight)."""
    weight, rows_normalised = model.head.metric_classifier_weight()
    return evaluation_context(
        model, data, subset_size=suite.evaluation.subset_size, subset_seed=suite.evaluation.subset_seed,
        device=device, batch_size=suite.recipe.eval_batch_size, amp=suite.runtime.amp,
        latent_name="z" if model.head.penultimate is not None else "h", num_classes=model.head.num_classes,
        num_threads=suite.runtime.num_threads, classifier_weight=weight, rows_normalised=rows_normalised,
        quiet=quiet)


def result_record(ctx: EvalContext, accuracy: Mapping[str, float], evaluations: dict) -> dict:
    """The numbers of result.json every run shares (accuracies, latent, figure data, evaluations)."""
    out: dict[str, Any] = {"train_acc": accuracy.get("train"), "val_acc": accuracy.get("val"),
                           "test_acc": accuracy["test"]}
    if ctx.latents:
        out["latent"] = {"name": ctx.latent_name, "dim": int(ctx.latents["test"].shape[1])}
        if "train" in ctx.latents:
            # what the report's figures need, so that they are drawn from run folders alone
            out["figure_data"] = {"latent_histograms": latent_histograms(ctx.latents["train"], split="train")}
    out["evaluations"] = evaluations
    return out


# ------------------------------------------------------------------ a model the harness did not train

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _as_data(suite, data) -> EvalData:
    """The suite's dataset (every split, as the trainer loads it), or the user's (x, y) test tensors."""
    if data is None:
        from bench.data import load_dataset
        return EvalData.from_splits(load_dataset(suite.dataset))
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise BenchError("data must be a pair of tensors (x, y): inputs in [0, 1] (or uint8) and integer labels")
    x, y = data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise BenchError(f"data: {x.shape[0]} inputs and {y.shape[0]} labels (need the same, non-zero number)")
    if x.is_floating_point() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise BenchError("data: inputs must lie in [0, 1] (put any normalisation inside the model)")
    if y.is_floating_point() or y.dim() != 1:
        raise BenchError("data: labels must be a 1-D integer tensor")
    return EvalData(x.float() if x.is_floating_point() else x, y.long(), num_classes=int(y.max()) + 1,
                    pixel_scale=1.0 if x.is_floating_point() else 255.0)


def _check_name(name: str | None, runs) -> str:
    from registry import PLUGINS
    if runs is not None and not name:
        raise BenchError("writing a run folder needs a name (name=... / --name)")
    name = name or "model"
    if not _NAME.fullmatch(name):
        raise BenchError(f"name {name!r}: use letters, digits and . _ + - (it names the run's folder and row)")
    if name in PLUGINS:
        raise BenchError(f"name {name!r} is a plugin of the harness; an evaluated model needs a name of its own")
    return name


def _classifier_weight(model: nn.Module, classifier: str | None, latent) -> torch.Tensor | None:
    """The (K, d) weight of the module named ``classifier`` (NC3 compares it with the class means)."""
    if classifier is None:
        return None
    if latent is None:
        raise BenchError("a classifier layer (for NC3) needs a latent layer too: its weight acts on the latent")
    modules = dict(model.named_modules())
    weight = getattr(modules.get(classifier), "weight", None)
    if classifier not in modules or not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        names = [n for n, m in modules.items() if isinstance(getattr(m, "weight", None), torch.Tensor)]
        raise BenchError(f"no module {classifier!r} with a 2-D weight in the model; modules with a weight: "
                         f"{', '.join(names) or '(none)'}")
    return weight.detach()


def evaluate(model: nn.Module, suite: Any = "digits", *, latent: str | Callable | None = None,
             classifier: str | None = None,
             data: tuple[torch.Tensor, torch.Tensor] | None = None, runs: str | Path | None = None,
             name: str | None = None, evaluators: Sequence[str] | None = None,
             overrides: Sequence[str] = (), imports: Sequence[str] = (),
             device: str | torch.device | None = None, provenance: Mapping[str, Any] | None = None,
             quiet: bool = True) -> dict:
    """The suite's protocol on any model: the result record of a trained run, marked ``"origin": "evaluated"``.

    ``model``: an nn.Module taking [0, 1] inputs of the suite's dataset shape (any normalisation
    inside it) and returning logits. ``suite``: a built-in name, a YAML path or a Suite
    (``overrides``: ``--set`` strings). ``data=(x, y)``: test tensors instead of the suite's
    dataset. ``latent``: the module name (or a callable ``x -> latent``) whose output the
    geometry and collapse metrics measure; without one they are skipped, and ``skipped`` says
    why. ``evaluators``: a subset of the suite's (default: all). With ``runs`` (and ``name``)
    one run folder ``<runs>/<suite>/<name>/seed0-lr0`` is written whole or not at all;
    ``provenance`` (e.g. the model file's sha256 and size) goes into it.
    Bad input raises BenchError (one line) before any attack and before anything is written.
    """
    from bench.core.device import configure, resolve_device
    from bench.evaluation.hook import check_settings, run_order
    from bench.models.checks import check_model
    from bench.suites import load_suite
    if not isinstance(model, nn.Module):
        raise BenchError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(suite, (str, Path)):
        suite = load_suite(str(suite), list(overrides), imports=tuple(imports))
    elif overrides:
        raise BenchError("overrides go with a suite name or path, not a Suite object (use suite.replace)")
    name = _check_name(name, runs)
    spec = RunSpec(suite.name, name, 0, 0.0)
    run_dir = spec.directory(Path(runs)) if runs is not None else None
    if run_dir is not None and run_dir.exists():
        raise BenchError(f"{run_dir} exists already; choose another --name or remove that folder")
    started = time.perf_counter()
    load_builtin_evaluators()
    names = tuple(evaluators) if evaluators is not None else suite.evaluation.evaluators
    for n in names:
        EVALUATORS.get(n)   # an unknown name: BenchError listing the known ones
    names = run_order(names, suite.evaluation.evaluators)
    settings = {k: v for k, v in suite.evaluation.settings.items() if k in names}
    check_settings(dataclasses.replace(suite.evaluation, evaluators=names, settings=settings))
    eval_data = _as_data(suite, data)
    device = device if isinstance(device, torch.device) else resolve_device(device or suite.runtime.device)
    configure(suite.runtime, device)
    probe = LatentProbe(model, latent).to(device)
    weight = _classifier_weight(model, classifier, latent)
    # the checks, on up to 256 test inputs, before any attack
    sample = attack_subset(eval_data.test_y.shape[0], min(256, eval_data.test_y.shape[0]), suite.evaluation.subset_seed)
    checks = check_model(probe, eval_data.test_x[sample].float().div(eval_data.pixel_scale).to(device),
                         eval_data.test_y[sample].to(device), eval_data.num_classes)
    if checks.get("switched_to_eval") and not quiet:
        print(f"warning: {', '.join(checks['switched_to_eval'])} in training mode: switched to eval mode")
    skipped = {}
    if latent is None:
        skipped = {n: "no latent layer given (latent= / --latent-layer)" for n in names if needs_latents(n)}
    elif eval_data.train_x is None:
        skipped = {n: "data=(x, y) has no training split (the latent metrics compare with its class means)"
                   for n in names if needs_latents(n)}
    names = tuple(n for n in names if n not in skipped)
    ctx, accuracy = evaluation_context(
        probe, eval_data, subset_size=suite.evaluation.subset_size, subset_seed=suite.evaluation.subset_seed,
        device=device, batch_size=suite.recipe.eval_batch_size, amp=suite.runtime.amp,
        latents=latent is not None, latent_name=latent if isinstance(latent, str) else "latent",
        num_classes=eval_data.num_classes, num_threads=suite.runtime.num_threads, classifier_weight=weight,
        quiet=quiet)
    if latent is not None and ctx.latents.get("test") is not None and ctx.latents["test"].dim() != 2:
        raise BenchError(f"latent {latent!r}: its output is not one vector per input")
    evaluations = run_evaluators(ctx, names, settings)
    result = {"schema": RESULT_SCHEMA, **spec.as_dict(), "status": "done", "origin": EVALUATED,
              **result_record(ctx, accuracy, evaluations), "checks": checks}
    if skipped:
        result["skipped"] = skipped
    result["wall_s"] = time.perf_counter() - started
    if run_dir is not None:
        _write_run_folder(suite, spec, run_dir, result, dict(provenance or {}), settings, names, device)
    return result


def _write_run_folder(suite, spec: RunSpec, run_dir: Path, result: dict, model_info: dict, settings: dict,
                      names: tuple[str, ...], device: torch.device) -> None:
    """config.json, provenance.json and result.json in a temporary sibling, renamed into place:
    the folder appears whole or not at all."""
    from bench.core.provenance import now, provenance
    config = folder.run_config(suite, spec)
    # what was evaluated and how: a trained run's config says how it was trained instead
    config["evaluated"] = {"model": model_info, "evaluators": list(names), "settings": settings,
                           "subset_size": suite.evaluation.subset_size, "subset_seed": suite.evaluation.subset_seed}
    made_parent = not run_dir.parent.exists()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)   # mkdtemp's 0700, as a folder made by mkdir would be
        io.atomic_write_json(tmp / folder.PROVENANCE, {**provenance(device), "origin": EVALUATED,
                                                       "model": model_info, "finished": now()})
        io.atomic_write_json(tmp / folder.RESULT, result)
        io.atomic_write_json(tmp / folder.CONFIG, config)   # last: a folder with config.json counts as a run
        os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_parent:
            shutil.rmtree(run_dir.parent, ignore_errors=True)
        raise
