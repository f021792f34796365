"""Train and evaluate one Run. Knows nothing about sweeps: reads its config, resumes from its
checkpoint if there is one, and ends by writing result.json (atomically)."""
from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from bench.core import io
from bench.models.backbones import create_backbone
from bench.config.schema import Suite
from bench.data import DataSplits, DeviceLoader, load_dataset
from bench.core.device import autocast, configure, resolve_device
from bench.core.errors import BenchError
from bench.config.params import resolve_params
from bench.evaluation.hook import run_evaluators
from bench.models.classifier import Classifier
from bench.evaluation.inference import outputs
from bench.core.progress import progress
from bench.core.provenance import now, provenance
from bench.runs import folder
from bench.runs.folder import RESULT_SCHEMA, RunOutcome, RunSpec
from bench.training.step import step_seed, training_step
from registry import create_plugin

CHECKPOINT_FORMAT = 1


class Diverged(Exception):
    """Training produced a non-finite loss; the run is recorded as failed, naming the term."""

    def __init__(self, epoch: int, reason: str, term: str | None = None) -> None:
        super().__init__(f"epoch {epoch}: {reason}")
        self.epoch = epoch
        self.reason = reason
        self.term = term


def first_nonfinite(names: list[str], per_step: torch.Tensor) -> tuple[str, float, int] | None:
    """(term, value, step) where the loss first went non-finite; None if it never did.

    ``per_step`` holds one row of loss terms per step. Only the first bad step says which
    term broke: its update carries the NaN into the weights, and from the next step on
    every term (the cross-entropy too) is non-finite. Within that step the plugin's own
    term is named rather than ``total``, which is only the sum of the others (a bad term
    makes it bad too); ``total`` is named only when every term is finite but their sum is
    not (an overflow)."""
    bad = ~torch.isfinite(per_step)
    rows = bad.any(dim=1).nonzero()
    if rows.numel() == 0:
        return None
    step = int(rows[0])
    columns = [i for i in range(len(names)) if bad[step, i]]
    named = [i for i in columns if names[i] != "total"] or columns
    return names[named[0]], float(per_step[step, named[0]]), step


_DATA_CACHE: dict[tuple, DataSplits] = {}


def get_data(suite: Suite) -> DataSplits:
    """Load a suite's dataset once per process (every run of a sweep shares it)."""
    key = tuple(sorted(suite.dataset.__dict__.items()))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(suite.dataset)
    return _DATA_CACHE[key]


def build_model(suite: Suite, plugin: str, data: DataSplits, seed: int) -> Classifier:
    """Seeded construction: same seed, same initial weights."""
    torch.manual_seed(seed)
    backbone = create_backbone(suite.backbone, data.input_shape)
    params = resolve_params(plugin, suite.plugin_params.get(plugin))   # the plugin's Params, suite values over defaults
    head = create_plugin(plugin, backbone.feature_dim, data.num_classes, suite.latent_widths, params=params)
    mean, std = data.channel_stats()
    return Classifier(backbone, head, mean, std)


def make_optimizer(model: Classifier, suite: Suite, lr: float) -> torch.optim.Optimizer:
    """AdamW with two groups: the final classifier (constant lr) and everything else (decayed)."""
    classifier_ids = {id(p) for p in model.head.classifier.parameters()}
    rest = [p for p in model.parameters() if id(p) not in classifier_ids]
    classifier = [p for p in model.parameters() if id(p) in classifier_ids]
    groups = [{"params": rest, "decay": True}, {"params": classifier, "decay": False}]
    fused = suite.recipe.optimizer == "adamw-fused"
    return torch.optim.AdamW(groups, lr=lr, weight_decay=suite.recipe.weight_decay, fused=fused or None)


def set_learning_rates(optimizer: torch.optim.Optimizer, suite: Suite, lr: float, epoch: int) -> float:
    factor = suite.recipe.lr_factor(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr * factor if group["decay"] else lr
    return lr * factor


def epoch_seed(seed: int, epoch: int) -> int:
    """Shuffle/augmentation seed of one pass over the data: a resumed run draws exactly the same batches."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def batch_stream(loader: DeviceLoader, seed: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches from optimizer step ``start_step`` on, pass after pass over the data.

    Pass p is shuffled (and augmented) with ``epoch_seed(seed, p)``, so step s gets the same
    batch whether the run started at 0 or resumed in the middle of a pass. Schedule epochs
    are cut out of this stream (``itertools.islice``, which never reads ahead): one pass
    each by default, ``recipe.epoch_steps`` steps each when paced.
    """
    steps_per_pass = len(loader)
    pass_index, skip = divmod(start_step, steps_per_pass)
    while True:
        loader.set_seed(epoch_seed(seed, pass_index))
        yield from loader.batches(skip)
        pass_index, skip = pass_index + 1, 0


def predict(model: Classifier, x: torch.Tensor, pixel_scale: float, device: torch.device,
            batch_size: int, amp: str = "off") -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, predictions) for uint8 inputs, on CPU, in float32."""
    model.eval()
    logits, latents = outputs(model, x, device=device, batch_size=batch_size, pixel_scale=pixel_scale,
                              latents=True, amp=amp)
    return latents, logits.argmax(1)


def _accuracy(model, x, y, data, device, batch_size, amp) -> float:
    _, pred = predict(model, x, data.pixel_scale, device, batch_size, amp)
    return float((pred == y).float().mean())


def train_run(suite: Suite, spec: RunSpec, out_root: Path, *, quiet: bool = True,
              device: torch.device | None = None,
              on_epoch_end: Callable[[int], None] | None = None,
              checkpoint_requested: Callable[[], bool] | None = None) -> RunOutcome:
    """Train (or resume) one run, evaluate it and write result.json. Idempotent.

    Safe to call from many processes on one runs tree: the run's lock (bench.core.locks) makes
    one of them the only writer; the others get status "busy" (holder info in ``result``).
    A run that raises is recorded as failed in its result.json (kind "oom" or "exception",
    with the reason) and does not propagate; a BenchError (bad input) does. Interrupts
    (KeyboardInterrupt, SystemExit) propagate and leave the run resumable.
    ``checkpoint_requested()``, asked after every epoch, forces a checkpoint (preemption).
    """
    from bench.core.locks import RunLock, holder, remove_stale_temporaries
    run_dir = spec.directory(out_root)
    if (run_dir / folder.RESULT).exists():
        return RunOutcome(spec, "skipped", folder.read_result(run_dir))
    lock = RunLock(run_dir)
    if not lock.acquire():
        return RunOutcome(spec, "busy", {"holder": holder(run_dir) or {}})
    try:
        if (run_dir / folder.RESULT).exists():  # finished by another process between the check and the lock
            return RunOutcome(spec, "skipped", folder.read_result(run_dir))
        remove_stale_temporaries(run_dir)
        started = time.perf_counter()
        try:
            return _train_run_locked(suite, spec, out_root, quiet=quiet, device=device,
                                     on_epoch_end=on_epoch_end, checkpoint_requested=checkpoint_requested)
        except BenchError:
            raise
        except Exception as exc:  # recorded: one broken run must not lose a sweep
            return record_failure(spec, run_dir, exc, time.perf_counter() - started)
    finally:
        lock.release()


def failure_kind(exc: BaseException) -> str:
    """'oom' for out-of-memory errors (CUDA, CPU allocator, MemoryError), else 'exception'."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "oom"
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return "oom"
    return "exception"


def record_failure(spec: RunSpec, run_dir: Path, exc: BaseException, wall_s: float = 0.0) -> RunOutcome:
    """Write a failed result.json for an exception raised inside a run (the caller holds its
    lock), with the epoch that was running (or stage "evaluation" after the last one)."""
    import traceback
    kind = failure_kind(exc)
    if kind == "oom" and torch.cuda.is_available():
        torch.cuda.empty_cache()  # let the next run of this process start clean
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    result = folder.write_failure(run_dir, spec, kind, f"{type(exc).__name__}: {exc}"[:2000], wall_s=wall_s,
                                  traceback="".join(tb)[-4000:])
    return RunOutcome(spec, "failed", result, wall_s)


def _train_run_locked(suite: Suite, spec: RunSpec, out_root: Path, *, quiet: bool = True,
                      device: torch.device | None = None,
                      on_epoch_end: Callable[[int], None] | None = None,
                      checkpoint_requested: Callable[[], bool] | None = None) -> RunOutcome:
    """train_run's work, with the run's lock held."""
    run_dir = spec.directory(out_root)
    result_path = run_dir / folder.RESULT
    if result_path.exists():
        return RunOutcome(spec, "skipped", folder.read_result(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    config = folder.run_config(suite, spec)
    config_path = run_dir / folder.CONFIG
    if config_path.exists():
        stored = io.read_json(config_path)
        if not folder.same_identity(stored, config):
            raise BenchError(f"{run_dir} holds a run with a different configuration "
                             f"({folder.differences(folder.run_identity(stored), folder.run_identity(config))}); "
                             f"use another --runs folder or delete that run folder")
    else:
        io.atomic_write_json(config_path, config)

    device = device or resolve_device(suite.runtime.device)
    configure(suite.runtime, device)
    prov = provenance(device)
    started = time.perf_counter()
    data = get_data(suite)
    model = build_model(suite, spec.plugin, data, spec.seed).to(device)
    if device.type == "cuda" and suite.runtime.channels_last and len(data.input_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, suite, spec.lr)
    recipe = suite.recipe

    checkpoint_path = run_dir / folder.CHECKPOINT
    log_path = run_dir / folder.LOG
    start_epoch, restarted = resume_from_checkpoint(run_dir, model, optimizer, device)
    if restarted is not None:  # the weights may be half-loaded: start from the seeded initial ones
        print(restarted, file=sys.stderr, flush=True)
        model = build_model(suite, spec.plugin, data, spec.seed).to(device)
        if device.type == "cuda" and suite.runtime.channels_last and len(data.input_shape) == 3:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, suite, spec.lr)
    # keep only the log lines the checkpoint covers: a resumed run rewrites the rest identically
    log_rows = [r for r in io.read_jsonl(log_path) if r.get("epoch", math.inf) < start_epoch]
    io.atomic_write_text(log_path, "".join(io.json.dumps(r, sort_keys=True) + "\n" for r in log_rows))
    prov_path = run_dir / folder.PROVENANCE
    if restarted is not None:
        prov["restarted"] = {"at": prov["started"], "reason": restarted.removeprefix("warning: ")}
    if start_epoch > 0 and prov_path.exists():
        # a resumed run keeps its first start; each resumption is listed with its epoch and host
        try:
            earlier = io.read_json(prov_path)
        except (OSError, ValueError):
            earlier = {}   # a damaged record of earlier starts must not stop the run
        earlier = earlier if isinstance(earlier, dict) else {}
        resumed = earlier.get("resumed", []) + [{"at": prov["started"], "epoch": start_epoch,
                                                  "host": prov["host"], "commit": prov["commit"]}]
        prov.update(started=earlier.get("started", prov["started"]), resumed=resumed)
    io.atomic_write_json(prov_path, prov)

    loader = DeviceLoader(data.train_x, data.train_y, recipe.batch_size, pixel_scale=data.pixel_scale,
                          device=device, shuffle=True, augment=recipe.augment, padding=recipe.crop_padding)
    if suite.runtime.compile:
        model.backbone.compile()  # in place: state_dict keys (and checkpoints) stay the same
    amp = suite.runtime.amp
    failure = None
    # a schedule epoch: one pass over the data, or a reference epoch of recipe.epoch_steps steps
    epoch_steps = recipe.epoch_steps or len(loader)
    stream = batch_stream(loader, spec.seed, start_epoch * epoch_steps)
    epochs = progress(range(start_epoch, recipe.epochs), quiet=quiet, desc=spec.key, unit="epoch",
                      leave=False, initial=start_epoch, total=recipe.epochs)
    try:
        for epoch in epochs:
            row = _train_epoch(model, optimizer, itertools.islice(stream, epoch_steps), suite, spec,
                               epoch, device, amp, epoch * epoch_steps)   # the first step: inner attacks' seeds
            if recipe.epoch_steps:
                row["step"] = (epoch + 1) * epoch_steps   # optimizer steps done
            if (epoch + 1) % recipe.log_every == 0 or epoch + 1 == recipe.epochs:
                row["val_acc"] = _accuracy(model, data.val_x, data.val_y, data, device, recipe.eval_batch_size, amp)
            io.append_jsonl(log_path, row)
            if ((epoch + 1) % recipe.checkpoint_every == 0 or epoch + 1 == recipe.epochs
                    or (checkpoint_requested is not None and checkpoint_requested())):
                io.atomic_torch_save(checkpoint_path, {"format": CHECKPOINT_FORMAT, "epoch": epoch + 1,
                                                       "step": (epoch + 1) * epoch_steps,
                                                       "model": model.state_dict(),
                                                       "optimizer": optimizer.state_dict()})
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    except Diverged as exc:
        failure = exc
    except Exception:
        _stamp_finished(prov_path, prov)   # the failure is recorded by the caller
        raise

    train_wall = time.perf_counter() - started
    if failure is not None:
        _stamp_finished(prov_path, prov)
        result = folder.write_failure(run_dir, spec, "nan", failure.reason, epoch=failure.epoch, wall_s=train_wall,
                                      stage="training", term=failure.term)
        return RunOutcome(spec, "failed", result, train_wall)

    # a run resumed from its final checkpoint trains no epoch: put the schedules (γ, the
    # margin plugins' inference scale) where an uninterrupted run leaves them
    model.head.set_epoch(recipe.epochs - 1)
    try:
        result = evaluate_run(suite, spec, model, data, device, quiet=quiet)
    finally:
        # the run's own end: after its evaluation (result.json's wall_s covers both), so that
        # finished - started spans the run's training and evaluation
        _stamp_finished(prov_path, prov)
    result["train_wall_s"] = train_wall
    result["wall_s"] = time.perf_counter() - started
    folder.write_result(run_dir, result)
    return RunOutcome(spec, "done", result, result["wall_s"])


def _stamp_finished(prov_path: Path, prov: dict) -> None:
    prov["finished"] = now()
    io.atomic_write_json(prov_path, prov)


def resume_from_checkpoint(run_dir: Path, model: Classifier, optimizer, device) -> tuple[int, str | None]:
    """(epoch to start from, None) after loading the run's checkpoint into ``model`` and
    ``optimizer`` ((0, None) without one); (0, warning line) when it does not load: it is
    set aside and the run restarts from scratch (the caller rebuilds the model)."""
    try:
        # onto the CPU: load_state_dict moves each tensor to its parameter's device, and Adam's
        # step counters stay on the CPU as in an uninterrupted run (map_location=cuda put them
        # on the GPU: the H200 check's resumed state differed in device, not in value)
        state = folder.read_checkpoint(run_dir, map_location="cpu")
        if state is None:
            return 0, None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise BenchError(f"{run_dir / folder.CHECKPOINT}: unknown checkpoint format {state.get('format')!r}")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:   # wrong or missing tensors
            raise folder.UnreadableCheckpoint(f"{type(exc).__name__}: {str(exc).split('. ')[0]}"[:300]) from None
    except folder.UnreadableCheckpoint as exc:
        return 0, folder.set_aside_checkpoint(run_dir, str(exc))
    return start_epoch, None


def _train_epoch(model: Classifier, optimizer, batches: Iterable, suite: Suite,
                 spec: RunSpec, epoch: int, device: torch.device, amp: str, first_step: int = 0) -> dict:
    """Train on ``batches`` (one schedule epoch) with the schedules of (reference) epoch ``epoch``;
    ``first_step`` is the run's optimizer step of the first batch (the seed of inner attacks)."""
    model.train()
    model.head.set_epoch(epoch)
    lr_now = set_learning_rates(optimizer, suite, spec.lr, epoch)
    # hot path: per step only detached references to the loss terms and one argmax, kept on
    # the device; they are reduced (and synchronised) once, at the end of the epoch
    names: list[str] | None = None
    step_terms: list[torch.Tensor] = []
    step_preds: list[torch.Tensor] = []
    step_labels: list[torch.Tensor] = []
    t0 = time.perf_counter()
    channels_last = device.type == "cuda" and suite.runtime.channels_last
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for xb, yb in batches:
        if channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        out, terms = training_step(model, optimizer, params, xb, yb, device=device, amp=amp,
                                   seed=step_seed(spec.seed, first_step + len(step_labels)))
        if names is None:
            names = list(terms)
        elif len(terms) != len(names) or any(a != b for a, b in zip(terms, names)):
            raise ValueError(f"{spec.plugin}: loss terms changed within an epoch: {names} -> {list(terms)}")
        step_terms.extend(v.detach() for v in terms.values())
        step_preds.append(out.logits.detach().argmax(1))
        step_labels.append(yb)
    sizes = [y.shape[0] for y in step_labels]
    seen = sum(sizes)
    weights = torch.tensor(sizes, dtype=torch.float64)[:, None]
    per_step = torch.stack(step_terms).view(len(sizes), -1).cpu().double()
    means = ((per_step * weights).sum(0) / seen).tolist()
    correct = int((torch.cat(step_preds) == torch.cat(step_labels)).sum())
    row = {"epoch": epoch, "lr": lr_now, "train_acc": correct / seen,
           "time_s": time.perf_counter() - t0, **model.head.schedule_values()}
    broke = first_nonfinite(names or [], per_step)
    if broke is not None:
        term, value, step = broke
        raise Diverged(epoch, f"loss term {term!r} is {value} at step {step + 1} of {len(sizes)}", term)
    for name, value in zip(names or [], means):
        row[f"loss_{name}"] = value
    return row


def evaluate_run(suite: Suite, spec: RunSpec, model: Classifier, data: DataSplits,
                 device: torch.device, *, quiet: bool = True) -> dict:
    """Accuracies on every split, latents, then the suite's evaluators: ``bench.training.evaluate``'s
    one entry point, given what the plugin knows (its latent and NC3's classifier weight)."""
    from bench.training.evaluate import classifier_context, result_record
    ctx, accuracy = classifier_context(suite, model, data, device, quiet=quiet)
    evaluations = run_evaluators(ctx, suite.evaluation.evaluators, suite.evaluation.settings)
    return {"schema": RESULT_SCHEMA, **spec.as_dict(), "status": "done",
            "schedules_final": model.head.schedule_values(), **result_record(ctx, accuracy, evaluations)}


def load_trained_run(run_dir: Path, device: torch.device | None = None):
    """(suite, spec, model in eval mode, data, device) of a finished run, from its folder alone."""
    from bench.suites.imports import load_run_imports
    run_dir = Path(run_dir)
    config_path, checkpoint_path = run_dir / folder.CONFIG, run_dir / folder.CHECKPOINT
    if not config_path.exists() or not checkpoint_path.exists():
        raise BenchError(f"{run_dir} is not a trained run (needs config.json and checkpoint.pt)")
    config = io.read_json(config_path)
    load_run_imports(config.get("imports") or ())   # a user's plugin module, recorded with the run
    suite = folder.suite_from_config(config)
    spec = RunSpec(**config["run"])
    device = device or resolve_device(suite.runtime.device)
    data = get_data(suite)
    model = build_model(suite, spec.plugin, data, spec.seed).to(device)
    try:
        # onto the CPU: load_state_dict moves each tensor to its parameter's device, and Adam's
        # step counters stay on the CPU as in an uninterrupted run (map_location=cuda put them
        # on the GPU: the H200 check's resumed state differed in device, not in value)
        state = folder.read_checkpoint(run_dir, map_location="cpu")
    except folder.UnreadableCheckpoint as exc:
        raise BenchError(f"{checkpoint_path} does not load ({exc}): the run's weights are lost (its result.json "
                         f"is kept); to evaluate it again, retrain it: remove {run_dir / folder.RESULT} and rerun bench run "
                         f"(the run restarts from scratch)") from None
    if int(state["epoch"]) != suite.recipe.epochs:
        raise BenchError(f"{run_dir}: checkpoint is at epoch {state['epoch']} of {suite.recipe.epochs}; "
                         f"finish the run first (bench run)")
    model.load_state_dict(state["model"])
    model.head.set_epoch(suite.recipe.epochs - 1)
    return suite, spec, model.eval(), data, device


def reevaluate_run(run_dir: Path, evaluators: tuple[str, ...], settings: dict | None = None, *,
                   quiet: bool = True, device: torch.device | None = None) -> dict:
    """Run (or rerun) evaluators on a finished run and merge them into its result.json.

    Used by ``bench attack`` / ``bench metrics``: nothing is retrained; the other
    entries of result.json are kept; the file is replaced atomically.
    """
    from bench.core.locks import RunLock
    run_dir = Path(run_dir)
    lock = RunLock(run_dir)
    if not lock.acquire(blocking=True):
        raise BenchError(f"{run_dir}: could not take the run's lock")
    try:
        return _reevaluate_locked(run_dir, evaluators, settings, quiet=quiet, device=device)
    finally:
        lock.release()


def _reevaluate_locked(run_dir: Path, evaluators: tuple[str, ...], settings: dict | None, *,
                       quiet: bool, device: torch.device | None) -> dict:
    """reevaluate_run's work, with the run's lock held (one writer of result.json at a time)."""
    if not folder.is_done(folder.read_result(run_dir)):
        raise BenchError(f"{run_dir}: no successful result.json to add evaluations to")
    suite, spec, model, data, device = load_trained_run(run_dir, device)
    merged = dict(suite.evaluation.settings)
    merged.update(settings or {})
    fresh = evaluate_run(suite.replace(evaluation=dataclasses.replace(
        suite.evaluation, evaluators=tuple(evaluators),
        settings={k: v for k, v in merged.items() if k in evaluators})), spec, model, data, device, quiet=quiet)
    result = folder.read_result(run_dir)
    result.setdefault("evaluations", {}).update(fresh["evaluations"])
    result.setdefault("figure_data", fresh["figure_data"])   # older runs: what the figures need, now known
    folder.write_result(run_dir, result)
    return result
