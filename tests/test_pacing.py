"""Step-paced schedules (recipe.epoch_steps): closed forms per optimizer step, the batch
stream across passes, exact resume in the middle of a reference epoch (and of a pass), the
new key's validation, and the built-in suites' stated paces."""
from __future__ import annotations

import math

import pytest
import torch

from bench.core.errors import BenchError
from bench.data import DeviceLoader
from bench.runs.folder import RunSpec
from bench.suites import load_suite
from bench.training import trainer
from bench.training.trainer import batch_stream, epoch_seed, train_run
from lpc import ConstantSchedule, GeometricSchedule, LinearRamp, reference_epoch

from conftest import leftover_temporaries, read_run, run_cli


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing records it as a failed run."""


# ----- the library: schedules per step and per fractional epoch, against closed forms -------
@pytest.mark.parametrize("epoch_steps", [1, 7, 390])
def test_geometric_at_step_is_a_staircase_of_reference_epochs(epoch_steps):
    g = GeometricSchedule(1e-2, 1.05, 1e6)
    for step in [0, 1, epoch_steps - 1, epoch_steps, epoch_steps + 1, 5 * epoch_steps - 1, 123_456, 10**7]:
        e = step // epoch_steps
        assert g.at_step(step, epoch_steps) == min(1e-2 * 1.05 ** min(e, 1000), 1e6)  # min: no float overflow


def test_the_papers_pace_reaches_the_cap_after_147420_steps():
    """γ ×1.05 per 390 steps from 1e-2: 1e6 at reference epoch 378, i.e. step 378·390."""
    g = GeometricSchedule()
    first_capped = g.epochs_to_cap() * 390
    assert first_capped == 147_420
    assert g.at_step(first_capped - 1, 390) == pytest.approx(1e-2 * 1.05 ** 377, rel=1e-12)
    assert g.at_step(first_capped - 1, 390) < 1e6
    assert g.at_step(first_capped, 390) == 1e6 == g.at_step(312_000, 390)
    assert reference_epoch(first_capped, 390) == 378 and reference_epoch(first_capped - 1, 390) == 377


def test_smooth_at_step_moves_every_step_and_meets_the_staircase_on_epoch_starts():
    g, r = GeometricSchedule(1e-2, 1.05, 1e6), LinearRamp(16.0, 64.0, 40)
    for step in range(0, 50 * 13, 3):
        assert g.at_step(step, 13, smooth=True) == pytest.approx(min(1e-2 * 1.05 ** (step / 13), 1e6), rel=1e-12)
        assert r.at_step(step, 13, smooth=True) == pytest.approx(
            16.0 + 48.0 * min(step / 13, 40) / 40, rel=1e-12)
        if step % 13 == 0:
            assert g.at_step(step, 13, smooth=True) == pytest.approx(g.at_step(step, 13), rel=1e-12)
    smooth = [g.at_step(s, 13, smooth=True) for s in range(40)]
    assert all(a < b for a, b in zip(smooth, smooth[1:]))


def test_fractional_epochs_follow_the_closed_forms():
    assert GeometricSchedule()(12.5) == pytest.approx(1e-2 * 1.05 ** 12.5, rel=1e-12)
    # the continuous curve crosses 1e6 at log(1e8)/log(1.05) = 377.54...
    assert GeometricSchedule()(377.5) == pytest.approx(1e-2 * 1.05 ** 377.5, rel=1e-12)
    assert GeometricSchedule()(377.5) < 1e6 == GeometricSchedule()(377.6)
    assert LinearRamp(0.1, 0.5, 100)(37.25) == pytest.approx(0.1 + 0.4 * 37.25 / 100, rel=1e-12)
    assert LinearRamp(0.1, 0.5, 100)(100.5) == 0.5
    assert ConstantSchedule(3.0)(0.25) == 3.0
    # a whole float epoch is the integer epoch
    assert GeometricSchedule()(17.0) == GeometricSchedule()(17)


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, True, "3", None])
def test_schedules_reject_bad_epochs(bad):
    with pytest.raises(ValueError, match="epoch"):
        GeometricSchedule()(bad)


@pytest.mark.parametrize("step,epoch_steps", [(-1, 3), (2.5, 3), (True, 3), (3, 0), (3, -390), (3, 2.0), (3, False)])
def test_at_step_rejects_bad_steps(step, epoch_steps):
    with pytest.raises(ValueError, match="step"):
        LinearRamp(0.0, 1.0, 5).at_step(step, epoch_steps)
    with pytest.raises(ValueError, match="step"):
        reference_epoch(step, epoch_steps)


# ----- the recipe key ------------------------------------------------------------------------
@pytest.mark.parametrize("value,message", [
    ("0", "epoch_steps must be a whole number of optimizer steps >= 1"),
    ("-390", "epoch_steps must be a whole number of optimizer steps >= 1"),
    ("2.5", "recipe.epoch_steps: expected int"),
    ("abc", "recipe.epoch_steps: expected int"),
    ("true", "recipe.epoch_steps: expected int"),
    ("[390]", "recipe.epoch_steps: expected int"),
])
def test_bad_epoch_steps_is_refused_at_suite_load(value, message):
    with pytest.raises(BenchError, match=message):
        load_suite("digits", [f"recipe.epoch_steps={value}"])


def test_epoch_steps_defaults_to_a_pass_and_accepts_whole_numbers():
    assert load_suite("digits").recipe.epoch_steps is None
    assert load_suite("digits", ["recipe.epoch_steps=390"]).recipe.epoch_steps == 390
    assert load_suite("digits", ["recipe.epoch_steps=390.0"]).recipe.epoch_steps == 390
    assert load_suite("digits", ["recipe.epoch_steps=390", "recipe.epoch_steps=null"]).recipe.epoch_steps is None


def test_a_plugin_that_needs_whole_passes_is_refused_under_a_step_pace():
    from registry import PLUGINS, Plugin, register_plugin

    @register_plugin("PassBound")
    class PassBound(Plugin):
        """Test plugin: per-epoch logic tied to passes over the data."""
        step_paced = False
    try:
        load_suite("digits", ["plugins=[PassBound]"])                 # fine without a step pace
        with pytest.raises(BenchError, match="PassBound .* cannot follow recipe.epoch_steps=390"):
            load_suite("digits", ["plugins=[PassBound, NoPen]", "recipe.epoch_steps=390"])
    finally:
        PLUGINS.remove("PassBound")


def test_an_unpaced_run_keeps_the_identity_it_had_before_the_key_existed():
    """Run folders and baselines written before recipe.epoch_steps existed still match: the key
    is in a run's identity only when set; the suite's paper_differences (words) never decide."""
    from bench.runs.folder import run_config, run_identity, same_identity
    spec = RunSpec("digits", "LPC", 0, 1e-3)
    unpaced = run_config(load_suite("digits"), spec)
    assert "epoch_steps" not in run_identity(unpaced)["suite"]["recipe"]
    paced = run_config(load_suite("digits", ["recipe.epoch_steps=36"]), spec)
    assert run_identity(paced)["suite"]["recipe"]["epoch_steps"] == 36 and not same_identity(unpaced, paced)
    reworded = run_config(load_suite("digits", ["paper_differences=[other words]"]), spec)
    assert same_identity(unpaced, reworded)
    assert not same_identity(unpaced, run_config(load_suite("digits", ["recipe.epochs=3"]), spec))


def test_bad_epoch_steps_is_one_error_line_from_the_cli(tmp_path):
    done = run_cli(["run", "--suite", "digits", "--set", "recipe.epoch_steps=0", "--out", "out"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: recipe.epoch_steps must be a whole number of optimizer steps >= 1 (or null: one pass "
        "over the data), got 0"]
    assert not (tmp_path / "out").exists()


# ----- the batch stream ------------------------------------------------------------------------
def image_loader(n: int = 37, batch: int = 8, augment: str = "crop_flip") -> DeviceLoader:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 5
    return DeviceLoader(x, y, batch, pixel_scale=255.0, shuffle=True, augment=augment, padding=2)


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_a_pass_started_at_batch_k_is_the_full_pass_from_k_on(augment):
    loader = image_loader(augment=augment)
    loader.set_seed(11)
    full = list(loader)
    assert len(full) == len(loader) == 5
    for start in range(len(loader) + 1):
        loader.set_seed(11)
        part = list(loader.batches(start))
        assert len(part) == len(full) - start
        for (xa, ya), (xb, yb) in zip(part, full[start:]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="outside a pass"):
        next(loader.batches(len(loader) + 1))


def test_the_stream_from_any_step_is_the_stream_from_0_cut_there():
    loader = image_loader()
    per_pass = len(loader)
    head = [b for _, b in zip(range(4 * per_pass), batch_stream(loader, seed=2))]
    for start in [0, 1, per_pass - 1, per_pass, per_pass + 3, 3 * per_pass + 4]:
        tail = [b for _, b in zip(range(4 * per_pass - start), batch_stream(loader, seed=2, start_step=start))]
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(tail, head[start:]))
    # pass p is the loader's pass seeded with epoch_seed(seed, p): the default (unpaced) batches
    loader.set_seed(epoch_seed(2, 1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(loader, head[per_pass:2 * per_pass]))


# ----- the harness: schedules per optimizer step ----------------------------------------------
PACED = ["recipe.epoch_steps=3", "recipe.lr_decay_start=2", "recipe.lr_decay_every=2",
         "plugin_params.LPC.gamma.factor=2.0", "plugin_params.LPC.gamma.cap=0.1",
         "plugin_params.ArcFace.margin.epochs=4", "plugin_params.ArcFace.scale.epochs=4"]


def per_step_values(monkeypatch, plugin_cls_path: str, value_of) -> list:
    """Record, at every optimizer step, (the head's epoch, a schedule value, the two group lrs)."""
    import importlib
    module, name = plugin_cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    real = cls.loss_terms
    seen = []

    def recording(self, out, y):
        seen.append((self.epoch, value_of(self)))
        return real(self, out, y)
    monkeypatch.setattr(cls, "loss_terms", recording)
    lrs = []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        lrs.append(tuple(g["lr"] for g in self.param_groups))
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen, lrs


def test_gamma_and_lr_advance_per_reference_epoch_of_n_steps(tmp_path, tiny_suite, monkeypatch):
    """206 training images (256 before the validation hold-out) at batch 32 = 7 steps per pass; a reference epoch is 3 steps, so reference
    epochs cut through passes. At optimizer step s (from 0), with e = s // 3: γ = 0.01·2^e
    capped at 0.1, lr = 1e-3·0.5^((e-2)//2 + 1) from e = 2 on, the classifier's 1e-3 throughout."""
    suite = tiny_suite(*PACED, epochs=7)
    seen, lrs = per_step_values(monkeypatch, "registry.plugins.lpc_family._LatentPenaltyPlugin",
                                lambda head: head.params.gamma(head.epoch))
    spec = RunSpec(suite.name, "LPC", 0, 1e-3)
    assert train_run(suite, spec, tmp_path).status == "done"
    assert len(seen) == len(lrs) == 7 * 3
    for step, ((epoch, gamma), (lr_rest, lr_classifier)) in enumerate(zip(seen, lrs)):
        e = step // 3
        assert epoch == e
        assert gamma == min(0.01 * 2.0 ** e, 0.1)
        assert lr_rest == pytest.approx(1e-3 * (0.5 ** ((e - 2) // 2 + 1) if e >= 2 else 1.0), rel=1e-15)
        assert lr_classifier == 1e-3
    rows = read_run(spec.directory(tmp_path))[1]
    assert [r["epoch"] for r in rows] == list(range(7))
    assert [r["step"] for r in rows] == [3 * (e + 1) for e in range(7)]
    assert [r["gamma"] for r in rows] == [min(0.01 * 2.0 ** e, 0.1) for e in range(7)]


def test_margin_and_scale_ramp_per_reference_epoch(tmp_path, tiny_suite, monkeypatch):
    suite = tiny_suite(*PACED, epochs=6)
    seen, _ = per_step_values(monkeypatch, "registry.plugins.margin._MarginPlugin",
                              lambda head: (head.params.margin(head.epoch), head.params.scale(head.epoch)))
    spec = RunSpec(suite.name, "ArcFace", 0, 1e-3)
    assert train_run(suite, spec, tmp_path).status == "done"
    assert len(seen) == 6 * 3
    for step, (epoch, (margin, scale)) in enumerate(seen):
        e = step // 3
        assert epoch == e
        assert margin == pytest.approx(0.1 + 0.4 * min(e, 4) / 4, rel=1e-12)
        assert scale == pytest.approx(16.0 + 48.0 * min(e, 4) / 4, rel=1e-12)
    result = read_run(spec.directory(tmp_path))[0]
    assert result["schedules_final"] == {"margin": 0.5, "scale": 64.0}


def test_a_reference_epoch_of_one_pass_is_the_default(tmp_path, tiny_suite):
    """epoch_steps = steps per pass: the same batches, schedules and weights as no pace at all."""
    default = tiny_suite(epochs=3)
    paced = tiny_suite("recipe.epoch_steps=7", epochs=3)         # 206 training images / batch 32
    for suite, out in ((default, tmp_path / "a"), (paced, tmp_path / "b")):
        assert train_run(suite, RunSpec(suite.name, "LPC", 0, 1e-3), out).status == "done"
    spec = RunSpec("digits", "LPC", 0, 1e-3)
    result_a, log_a = read_run(spec.directory(tmp_path / "a"))
    result_b, log_b = read_run(spec.directory(tmp_path / "b"))
    assert [{k: v for k, v in r.items() if k != "step"} for r in log_b] == log_a
    assert result_a == result_b
    a = torch.load(spec.directory(tmp_path / "a") / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(spec.directory(tmp_path / "b") / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----- kill and resume in the middle of a reference epoch -----------------------------------
def dying_stream(budget: int):
    """batch_stream that raises Interrupt when asked for batch number ``budget`` of this process."""
    real = trainer.batch_stream

    def stream(loader, seed, start_step=0):
        for i, batch in enumerate(real(loader, seed, start_step)):
            if i == budget:
                raise Interrupt
            yield batch
    return stream


@pytest.mark.parametrize("extra,checkpoint_every,budget", [
    ((), 1, 4),                                                   # dies 1 step into a reference epoch
    (("recipe.augment=crop_flip", "recipe.crop_padding=1"), 2, 8),  # augmented; dies 2 steps in, redoes steps
])
def test_killed_inside_reference_epochs_resumes_to_identical_results(tmp_path, tiny_suite, monkeypatch,
                                                                     extra, checkpoint_every, budget):
    """Reference epochs of 3 steps over passes of 7: every process is killed in the middle of a
    reference epoch, and the checkpoints it resumes from sit in the middle of passes."""
    suite = tiny_suite("recipe.epoch_steps=3", *extra, epochs=8, checkpoint_every=checkpoint_every)
    spec = RunSpec(suite.name, "LPC-SCL", 0, 1e-3)
    assert train_run(suite, spec, tmp_path / "ref").status == "done"
    expected = read_run(spec.directory(tmp_path / "ref"))

    out, run_dir = tmp_path / "resumed", spec.directory(tmp_path / "resumed")
    monkeypatch.setattr(trainer, "batch_stream", dying_stream(budget))
    resumed_at = []
    for _ in range(20):
        try:
            outcome = train_run(suite, spec, out)
        except Interrupt:
            assert not (run_dir / "result.json").exists() and leftover_temporaries(run_dir) == []
            state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
            resumed_at.append(state["step"])
            assert state["step"] == 3 * state["epoch"]
            continue
        assert outcome.status == "done"
        break
    # resumed from checkpoints in the middle of passes of 7 steps, more than once
    assert len(resumed_at) >= 3 and any(s % 7 for s in resumed_at), resumed_at
    assert read_run(run_dir) == expected
    a = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(spec.directory(tmp_path / "ref") / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ----- the built-in suites state their pace --------------------------------------------------
def test_digits_paper_is_the_papers_pace_and_digits_is_not():
    from bench.config.params import suite_params
    paper, fast = load_suite("digits-paper"), load_suite("digits")
    r = paper.recipe
    assert (r.epoch_steps, r.batch_size) == (390, 128)
    gamma = suite_params(paper)["LPC"]["gamma"]
    assert (gamma["start"], gamma["factor"], gamma["cap"]) == (1e-2, 1.05, 1e6)
    assert (r.lr_decay_start, r.lr_decay_every, r.lr_decay_factor) == (250, 50, 0.5)
    # γ sits at 1e6 for at least 20 reference epochs before the end
    assert r.epochs - GeometricSchedule(**gamma).epochs_to_cap() >= 20
    # the paper's 11 plugins and the PGD-AT control (one seed: it costs ~6 plain steps a step)
    assert len(paper.plugins) == 12 and "PGD-AT" in paper.plugins and len(paper.seeds) >= 3
    assert paper.seeds_of("PGD-AT") == paper.seeds[:1]
    assert set(fast.evaluation.evaluators) <= set(paper.evaluation.evaluators)   # the full evaluator set
    assert fast.recipe.epoch_steps is None
    assert any("digits-paper" in line for line in fast.paper_differences)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_the_paper_suites_state_their_pace(name):
    suite = load_suite(name)
    assert suite.recipe.epoch_steps == 391 == math.ceil(50_000 / suite.recipe.batch_size)
    assert any("391" in line for line in suite.paper_differences)


# ----- a real kill -9 of the CLI, in the middle of a reference epoch ----------------------------
PACED_KILL = ["dataset.limit_train=256", "evaluation.evaluators=[]", "evaluation.settings={}", "recipe.epochs=24",
              "recipe.epoch_steps=5", "recipe.checkpoint_every=3", "recipe.log_every=2"]
PACED_KILL_RUN = ["run", "--suite", "digits", "--plugins", "LPC", "--seeds", "0", "--quiet", "--no-report",
                  "--out", "out", *(arg for o in PACED_KILL for arg in ("--set", o))]


@pytest.mark.slow
def test_kill_9_inside_a_reference_epoch_then_resume_gives_the_uninterrupted_result(tmp_path):
    """``bench run`` with reference epochs of 5 steps over passes of 7, SIGKILLed just after its
    first checkpoint (15 steps: the middle of a pass), i.e. inside the next reference epoch;
    rerun, it ends with the uninterrupted run's result, log and weights."""
    import signal
    from conftest import kill_at_first_checkpoint, start_cli
    victim = start_cli(PACED_KILL_RUN, tmp_path)
    run_dir = tmp_path / "out" / "digits" / "LPC" / "seed0-lr0.001"
    kill_at_first_checkpoint(victim, tmp_path, lambda: run_dir)
    assert victim.returncode == -signal.SIGKILL
    assert not (run_dir / "result.json").exists(), "killed too late: the run had finished"
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5 * state["epoch"] and state["epoch"] < 24

    suite = load_suite("digits", PACED_KILL)
    spec = RunSpec("digits", "LPC", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path / "ref").status == "done"
    resumed = run_cli(PACED_KILL_RUN, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert read_run(run_dir) == read_run(spec.directory(tmp_path / "ref"))
    a = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(spec.directory(tmp_path / "ref") / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert leftover_temporaries(tmp_path / "out") == []
