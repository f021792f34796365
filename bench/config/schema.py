"""The one typed source of hyper-parameters: Recipe, Suite and their parts.

A suite is a YAML file (``bench/suites/<name>.yaml`` or any path) that is checked
against these dataclasses on load: an unknown key or a wrong type is an error naming
the dotted key. ``--set recipe.epochs=20`` overrides go through the same checks.
The recipe holds only what every plugin shares; a plugin's own parameters (γ, margins,
SupCon's τ …) are declared by the plugin (its ``Params``) and set per plugin in the
suite's ``plugin_params`` (``bench.config.params`` resolves and checks them).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal


from bench.core.typed import apply_overrides, to_dict


@dataclass(frozen=True)
class Recipe:
    """The shared training recipe (paper, Appendix C, unless a suite scales it down)."""

    # adamw: torch's default AdamW (a loop of tensor ops per parameter on CPU); adamw-fused:
    # the same update in torch's fused kernel, one pass per tensor (on the digits MLP its step
    # is ~2.5x cheaper, 0.15 vs 0.38 ms; the rounding differs, so the numbers differ too)
    optimizer: Literal["adamw", "adamw-fused"] = "adamw"
    weight_decay: float = 5e-5            # the paper: 0.5e-4 (the authors' code: 5e-4)
    batch_size: int = 128
    epochs: int = 800
    # Pace of every epoch-indexed schedule. None: a schedule epoch is one pass over the
    # training split. N: a schedule epoch is a "reference epoch" of N optimizer steps,
    # whatever the dataset size and batch (the paper's CIFAR-10 epoch: 391 steps of 128).
    # Then epochs, lr_decay_start/every, margin_ramp_epochs, γ's growth, log_every and
    # checkpoint_every all count reference epochs, and the data is streamed pass after pass.
    epoch_steps: int | None = None
    # lr: halved every lr_decay_every epochs from lr_decay_start on; the final classifier
    # keeps its initial lr (paper, Appendix C)
    lr_decay_start: int = 250
    lr_decay_every: int = 50
    lr_decay_factor: float = 0.5
    # none; crop (random crop of the zero-padded image); crop_flip (and a horizontal flip:
    # only for data whose mirror image is the same class, e.g. CIFAR's photographs)
    augment: Literal["none", "crop", "crop_flip"] = "crop_flip"
    crop_padding: int = 4
    log_every: int = 1                    # epochs between validation evaluations in log.jsonl
    checkpoint_every: int = 10            # epochs between checkpoints (and one at the end)
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        positive = ("weight_decay", "batch_size", "epochs", "lr_decay_every", "lr_decay_factor",
                    "log_every", "checkpoint_every", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not value > 0 and not (name == "weight_decay" and value == 0):
                raise ValueError(f"recipe.{name} must be > 0, got {value}")
        if self.lr_decay_start < 0 or self.crop_padding < 0:
            raise ValueError("recipe.lr_decay_start and crop_padding must be >= 0")
        if self.epoch_steps is not None and (isinstance(self.epoch_steps, bool)
                                             or not isinstance(self.epoch_steps, int) or self.epoch_steps < 1):
            raise ValueError(f"recipe.epoch_steps must be a whole number of optimizer steps >= 1 "
                             f"(or null: one pass over the data), got {self.epoch_steps!r}")
        for f in dataclasses.fields(self):  # inf/nan slip through "> 0"
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"recipe.{f.name} must be a finite number, got {value}")

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the (non-classifier) learning rate in (reference) epoch ``epoch``."""
        if epoch < self.lr_decay_start:
            return 1.0
        return self.lr_decay_factor ** ((epoch - self.lr_decay_start) // self.lr_decay_every + 1)

    def one_line(self, extra: tuple[str, ...] = ()) -> str:
        """The recipe in one line; ``extra`` parts (e.g. a plugin's γ) go before the augmentation."""
        epochs = f"{self.epochs} epochs of {self.epoch_steps} steps" if self.epoch_steps else f"{self.epochs} epochs"
        parts = [f"AdamW wd={self.weight_decay:g}", f"batch {self.batch_size}", epochs,
                 f"lr ×{self.lr_decay_factor:g} every {self.lr_decay_every} from epoch {self.lr_decay_start} "
                 f"(classifier constant)", *extra, f"augment={self.augment}"]
        return ", ".join(parts)


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"                  # a registered dataset: digits, cifar10, cifar100, imagefolder
    root: str | None = None               # data root (cifar*, imagefolder); --data-root overrides
    val_fraction: float = 0.1             # held out of the training split for lr selection
    split_seed: int = 0
    limit_train: int | None = None        # quick looks: stratified N of train, before the val hold-out
    limit_test: int | None = None
    download: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"dataset.val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"dataset.{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "mlp"                     # mlp, small_cnn, resnet18, resnet50
    hidden: tuple[int, ...] = (256, 256)  # mlp widths
    channels: tuple[int, ...] = (32, 64, 128)  # small_cnn stage widths


@dataclass(frozen=True)
class EvalConfig:
    """Which evaluators run after training, on which inputs, with which settings."""

    evaluators: tuple[str, ...] = ()
    subset_size: int = 1000               # test inputs the attacks use (same for every run)
    subset_seed: int = 0
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.subset_size < 1:
            raise ValueError(f"evaluation.subset_size must be >= 1, got {self.subset_size}")


@dataclass(frozen=True)
class RuntimeConfig:
    """How to run, not what to run: never part of a run's identity."""

    device: str = "auto"                  # auto, cpu, cuda, cuda:1, ...
    amp: Literal["auto", "bf16", "off"] = "auto"   # auto = bf16 on CUDA, off on CPU
    channels_last: bool = True            # CUDA only
    compile: bool = False
    deterministic: bool = False
    num_threads: int = 0                  # 0: leave torch's default
    # modules or .py files imported before the run (a user's plugins, evaluators): --import;
    # recorded in each run's config.json so that report/attack/metrics import them again
    imports: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlurmConfig:
    """How ``--executor slurm`` submits a sweep: one job array, one array task per run."""

    partition: str | None = None          # None: the cluster's default partition
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: float | None = None           # None: the partition's default
    time_min: int = 240                   # job time limit; longer runs checkpoint and requeue
    array_parallelism: int = 64           # at most this many array tasks run at once
    signal_delay_s: int = 120             # USR2 this long before the limit: checkpoint + requeue
    max_requeues: int = 20                # requeues after time limits (preemptions do not count)
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra #SBATCH options: {account: x, qos: y}
    setup: tuple[str, ...] = ()           # shell lines before the job: module load, venv activation
    folder: str | None = None             # submitit job files and logs (default <out>/.submitit)

    def __post_init__(self) -> None:
        for name in ("cpus_per_job", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"executor.slurm.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_job", "signal_delay_s", "max_requeues"):
            if getattr(self, name) < 0:
                raise ValueError(f"executor.slurm.{name} must be >= 0, got {getattr(self, name)}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ValueError(f"executor.slurm.mem_gb must be > 0, got {self.mem_gb}")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where a sweep's runs execute; like runtime, never part of a run's identity."""

    kind: Literal["inprocess", "pool", "slurm"] = "inprocess"
    workers: int = 1                      # pool: worker processes (each loads the data once)
    slurm: SlurmConfig = SlurmConfig()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"executor.workers must be >= 1, got {self.workers}")


def seed_problem(seeds) -> str:
    """Why ``seeds`` are not valid run seeds ('' when they are): whole numbers >= 0, each once.
    The one rule for every path a seed comes in by: a suite file, --set seeds=[…], --seeds,
    a run's config.json read back by report, check, attack or metrics."""
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63]
    if bad:
        return f"a seed is a whole number from 0 to 2^63-1, got {', '.join(map(repr, bad))}"
    if len(set(seeds)) != len(seeds):
        return f"seeds must not repeat, got {list(seeds)}"
    return ""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str = ""
    dataset: DatasetConfig = DatasetConfig()
    backbone: BackboneConfig = BackboneConfig()
    recipe: Recipe = Recipe()
    plugins: tuple[str, ...] = ()
    # per plugin, its own parameters (checked against the plugin's Params when the suite
    # loads; unset ones keep the plugin's defaults): {LPC: {gamma: {cap: 1.0e3}}}
    plugin_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    # per plugin, how many of ``seeds`` it runs (the first N) when fewer than all: a costly
    # control (adversarial training) trimmed to fit a budget, {PGD-AT: 1}; a selection, not
    # part of any run's identity
    plugin_seeds: dict[str, int] = field(default_factory=dict)
    lrs: tuple[float, ...] = (1e-3,)
    latent_widths: dict[str, int] = field(default_factory=lambda: {"narrow": 16, "intermediate": 64, "wide": 128})
    evaluation: EvalConfig = EvalConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    executor: ExecutorConfig = ExecutorConfig()
    paper_differences: tuple[str, ...] = ()   # stated in the leaderboard's header

    def __post_init__(self) -> None:
        if not self.name or self.name in (".", "..") or any(c in self.name for c in "/\\\0"):
            raise ValueError(f"suite name {self.name!r} must be a plain name (it names a folder under --runs)")
        if not self.plugins:
            raise ValueError("a suite needs at least one plugin")
        if not self.seeds or not self.lrs:
            raise ValueError("a suite needs at least one seed and one learning rate")
        if seed_problem(self.seeds):
            raise ValueError(f"seeds: {seed_problem(self.seeds)}")
        if any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"learning rates must be > 0, got {list(self.lrs)}")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.plugins)) != len(self.plugins):
            raise ValueError("seeds and plugins must not repeat")
        for plugin, count in self.plugin_seeds.items():
            if count < 1:
                raise ValueError(f"plugin_seeds.{plugin} must be >= 1 (the first N seeds), got {count}")

    def seeds_of(self, plugin: str) -> tuple[int, ...]:
        """The seeds plugin ``plugin`` runs: all of ``seeds``, or the first ``plugin_seeds[plugin]``."""
        return self.seeds[:self.plugin_seeds.get(plugin, len(self.seeds))]

    def with_overrides(self, overrides: list[str]) -> "Suite":
        return apply_overrides(self, overrides) if overrides else self

    def replace(self, **changes) -> "Suite":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return to_dict(self)
