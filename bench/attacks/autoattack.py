"""AutoAttack through the authors' own package, ``pyautoattack`` (methods ``autoattack-l2``, ``autoattack-linf``).

AutoAttack (Croce & Hein, ICML 2020, arXiv 2003.01690), *standard* version: on the inputs
still robust, in sequence, APGD-CE (100 iterations, no restart), APGD-T (targeted DLR
loss −(f_y − f_t)/(f_π1 − (f_π3 + f_π4)/2), 100 iterations for each of 9 target classes),
FAB-T (9 targets, 100 iterations) and Square (score-based, 5,000 queries, p_init 0.8);
every attack reseeded with the evaluator's seed. This module only configures and calls
``pyautoattack.AutoAttack(version="standard")``; it re-implements nothing.

* Budgets: the defaults are the standard ones. A suite may trim them (``apgd_steps``,
  ``targets``, ``fab_steps``, ``fab_targets``, ``square_queries``, and the generic
  ``eps``/``max_inputs``); every difference from the standard version is returned by
  :meth:`AutoAttackOptions.deviations` and stored in the result (``deviations``).
* Target classes: min(targets, K − 1). Fewer than 4 classes is refused before any attack
  runs (the targeted DLR loss reads the 4th-largest logit).
* The package's own checks (``pyautoattack.checks``: a randomised or dynamic model,
  outputs that look like probabilities, inputs with zero gradient, Square beating the
  white-box attacks, too many target classes) write warnings to the ``auto-attack``
  logger; they are captured, classified and stored per ε (``notes``), never printed.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass


from bench.attacks.library import AttackInfo, MethodOptions, _need_images, _positive
from bench.attacks.methods import register_attack
from bench.core.errors import BenchError

# the standard version's budgets (pyautoattack.AutoAttack._set_version('standard'))
STANDARD = {"apgd_steps": 100, "targets": 9, "fab_steps": 100, "square_queries": 5000}
SUBATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")

# the package's warnings, by the words that identify each check (pyautoattack/checks.py)
FLAG_PATTERNS = (
    ("randomized", "randomized defense"),
    ("probabilities", "probability distribution"),
    ("dynamic", "dynamic defense"),
    ("zero_gradients", "zero gradient"),
    ("square_beat_white_box", "Square Attack has decreased"),
    ("n_classes", "target classes"),
    ("n_classes", "not possible to use"),
)
FLAG_NAMES = tuple(dict.fromkeys(name for name, _ in FLAG_PATTERNS))


@dataclass(frozen=True)
class AutoAttackOptions(MethodOptions):
    """Budgets of AutoAttack's standard version (the defaults); smaller values are recorded deviations."""

    apgd_steps: int = 100            # APGD-CE and APGD-T iterations
    targets: int = 9                 # APGD-T target classes (at most K − 1)
    fab_steps: int = 100
    fab_targets: int | None = None   # FAB-T target classes (None: as ``targets``)
    square_queries: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("autoattack", apgd_steps=self.apgd_steps, targets=self.targets, fab_steps=self.fab_steps,
                  fab_targets=self.fab_targets, square_queries=self.square_queries)

    def target_counts(self, num_classes: int) -> tuple[int, int]:
        """(APGD-T targets, FAB-T targets) for a model with ``num_classes`` classes."""
        fab = self.targets if self.fab_targets is None else self.fab_targets
        return min(self.targets, num_classes - 1), min(fab, num_classes - 1)

    def deviations(self, num_classes: int) -> list[str]:
        """Every difference from the standard version, in words (empty: standard)."""
        out = []
        if self.apgd_steps != STANDARD["apgd_steps"]:
            out.append(f"APGD-CE/APGD-T {self.apgd_steps} iterations (standard: 100)")
        apgd_t, fab_t = self.target_counts(num_classes)
        for name, count, asked in (("APGD-T", apgd_t, self.targets),
                                   ("FAB-T", fab_t, self.targets if self.fab_targets is None else self.fab_targets)):
            if count != STANDARD["targets"]:
                why = f"the model has {num_classes} classes" if count < asked else "trimmed"
                out.append(f"{name} {count} target class{'es' if count != 1 else ''} (standard: 9; {why})")
        if self.fab_steps != STANDARD["fab_steps"]:
            out.append(f"FAB-T {self.fab_steps} iterations (standard: 100)")
        if self.square_queries != STANDARD["square_queries"]:
            out.append(f"Square {self.square_queries:,} queries (standard: 5,000)")
        return out


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _captured_checks():
    """Collect the package's check warnings (and its per-attack robust accuracies) silently."""
    from pyautoattack import checks
    logger = logging.getLogger("auto-attack")
    handler, propagate = _Capture(), logger.propagate
    accuracies: list[dict] = []
    original_square_check = checks.check_square_sr

    def square_check(acc_dict, *args, **kwargs):
        # the only place the package exposes its robust accuracy after each attack
        accuracies.append(dict(acc_dict))
        return original_square_check(acc_dict, *args, **kwargs)

    # check_dynamic counts traced calls in a module-level dict it never resets: one dynamic
    # model would flag every later one in the process
    for key in checks.funcs:
        checks.funcs[key] = 0
    logger.addHandler(handler)
    logger.propagate = False
    checks.check_square_sr = square_check
    try:
        with warnings.catch_warnings(record=True) as caught:   # checks called without a logger warn
            warnings.simplefilter("always")
            yield handler.messages, accuracies
        handler.messages.extend(str(w.message) for w in caught if "checks" in (w.filename or ""))
    finally:
        checks.check_square_sr = original_square_check
        logger.removeHandler(handler)
        logger.propagate = propagate


def classify_flags(messages: list[str]) -> dict[str, bool]:
    """{check name: raised?} for the package's warning messages."""
    flags = {name: False for name in FLAG_NAMES}
    for message in messages:
        for name, pattern in FLAG_PATTERNS:
            if pattern in message:
                flags[name] = True
    return flags


def configure(model, norm: str, eps: float, opts: AutoAttackOptions, info: AttackInfo):
    """A ``pyautoattack.AutoAttack`` of the standard version with ``opts``' budgets."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack
    if info.num_classes < 4:
        raise BenchError(f"autoattack-{norm.lower()} needs at least 4 classes (APGD-T's targeted DLR loss reads "
                         f"the 4th-largest logit); the model has {info.num_classes}")
    adversary = AutoAttack(model, norm=norm, eps=eps, seed=info.seed, version="standard", device=info.device)
    adversary.verbose = False
    apgd_t, fab_t = opts.target_counts(info.num_classes)
    adversary.apgd_targeted.n_target_classes = apgd_t
    adversary.fab.n_target_classes = fab_t
    adversary.fab.n_iter = opts.fab_steps
    adversary.square.n_queries = opts.square_queries
    if opts.apgd_steps != STANDARD["apgd_steps"]:
        # APGD derives its step-size checkpoints from n_iter when built: take them from a
        # fresh instance rather than restating the package's formula
        reference = APGDAttack(model, n_iter=opts.apgd_steps, eps=eps, norm=norm)
        for attack in (adversary.apgd, adversary.apgd_targeted):
            for key in ("n_iter", "n_iter_orig", "n_iter_2", "n_iter_min", "size_decr"):
                setattr(attack, key, getattr(reference, key))
    return adversary


def _autoattack(model, x, y, eps, opts: AutoAttackOptions, info: AttackInfo, norm: str):
    _need_images(x, f"autoattack-{norm.lower()}")
    adversary = configure(model, norm, eps, opts, info)
    with _captured_checks() as (messages, accuracies):
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
    if info.notes is not None:
        notes = info.notes.values
        notes["n"] = notes.get("n", 0) + x.shape[0]
        seen = notes.setdefault("messages", [])
        seen.extend(m for m in messages if m not in seen)
        # robust count after each attack (cumulative, as the package reports it)
        robust = notes.setdefault("robust_after", {})
        for acc in accuracies:
            for name, value in acc.items():
                if name != "clean":
                    robust[name] = robust.get(name, 0) + round(value * x.shape[0])
        flags = classify_flags(notes["messages"])
        notes["flags"] = flags
    return x_adv


@register_attack("autoattack-l2", norm="L2", kind="fixed_eps", library="pyautoattack", options=AutoAttackOptions,
                 min_classes=4)
def autoattack_l2(model, x, y, eps, opts: AutoAttackOptions, info: AttackInfo):
    """AutoAttack standard (Croce & Hein, ICML 2020) via pyautoattack, L2: APGD-CE, APGD-T, FAB-T, Square. Defaults: the standard budgets (100 iterations, 9 targets, 5,000 queries)."""
    return _autoattack(model, x, y, eps, opts, info, "L2")


@register_attack("autoattack-linf", norm="Linf", kind="fixed_eps", library="pyautoattack",
                 options=AutoAttackOptions, min_classes=4)
def autoattack_linf(model, x, y, eps, opts: AutoAttackOptions, info: AttackInfo):
    """AutoAttack standard (Croce & Hein, ICML 2020) via pyautoattack, L∞: APGD-CE, APGD-T, FAB-T, Square. Defaults: the standard budgets (100 iterations, 9 targets, 5,000 queries)."""
    return _autoattack(model, x, y, eps, opts, info, "Linf")
