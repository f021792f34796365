"""Our batched, verified multi-class L2 DeepFool (the paper's robustness metric).

DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016, arXiv 1511.04599), multi-class,
L2. At each step, for input x_i with reference class y (the **true label**) and every
candidate class k ≠ y, linearise f'_k = f_k(x_i) − f_y(x_i), w'_k = ∇f_k(x_i) − ∇f_y(x_i),
and step to the nearest linearised boundary:

    l = argmin_k |f'_k| / ‖w'_k‖₂,      r_i = (|f'_l| / ‖w'_l‖₂ + 1e-4) · w'_l / ‖w'_l‖₂
    r_tot = Σ r_i,                       x_{i+1} = clip_[0,1](x_0 + (1 + η) · r_tot)

until the predicted class differs from y or ``max_iter`` steps are taken. The overshoot η
multiplies the *accumulated* perturbation, as in the authors' reference code (and
foolbox); the 1e-4 added to each step's distance is theirs too. Defaults (the paper):
η = 0.02, ``max_iter`` = 50, all classes as candidates (``candidates=k`` keeps the true
class and the k − 1 highest other clean logits; the common top-10 default is wrong for
CIFAR-100 and for low-dimensional heads).

Choices, fixed and stated: pixel space [0, 1] (normalisation is inside the model); the
reference class is the true label, so an input the model already misclassifies is not
attacked and is reported as ``misclassified`` (never as a success); an input is
``flipped`` only if its final, clamped input is re-classified as another class, otherwise
``not_flipped``. ‖r‖₂ is measured on that final clamped input, ρ = ‖r‖₂ / ‖x‖₂.

Efficiency: per iteration, one forward and K − 1 vector-Jacobian products, each giving
∇(f_k − f_y) for every input still being attacked at once (on CUDA the K − 1 products run
as one vmapped backward); inputs leave the batch as soon as they flip, and the clean
pass doubles as the first iteration's forward. Runs in the model's dtype (float32), with
no autocast, whatever precision training used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bench.attacks.methods import attack_guard, check_inputs, check_logits, model_dtype
from bench.attacks.outcomes import FLIPPED, MISCLASSIFIED, NOT_FLIPPED
from bench.core.errors import BenchError

# per-input outcomes: the one vocabulary of every attack evaluator (bench.attacks.outcomes)

# Added to each step's distance, as in the authors' reference implementation: it pushes
# the iterate just past the linearised boundary so that steps cannot stall on it.
STEP_EPSILON = 1e-4
# Guards divisions by a vanishing gradient norm (a flat, e.g. saturated, region).
NORM_FLOOR = 1e-8
# Memory budget (elements) for the Jacobian block of one backward: bounds RAM on wide
# class counts (CIFAR-100: 99 rows × batch × 3,072) by splitting the class rows.
JACOBIAN_BLOCK = 2 ** 27


@dataclass
class DeepFoolResult:
    """Per-input outcome of :func:`deepfool`, in input order, on the CPU."""

    x_adv: torch.Tensor            # final clamped inputs, in the model's dtype (clean where not attacked)
    norm: torch.Tensor             # ‖x_adv − x‖₂ (float64; NaN unless flipped)
    rho: torch.Tensor              # norm / ‖x‖₂ (float64; NaN unless flipped)
    iterations: torch.Tensor       # steps taken (int64)
    status: list[str]              # flipped / not_flipped / misclassified (bench.attacks.outcomes)
    clean_pred: torch.Tensor       # int64
    final_pred: torch.Tensor       # int64, class of the final clamped input
    num_classes: int = 0
    candidates: int = 0            # classes considered, the reference included
    stats: dict = field(default_factory=dict)

    @property
    def flipped(self) -> torch.Tensor:
        return torch.tensor([s == FLIPPED for s in self.status], dtype=torch.bool)


def deepfool(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, overshoot: float = 0.02,
             max_iter: int = 50, candidates: int | None = None, batch_size: int | None = None,
             device: torch.device | str | None = None,
             batched_jacobian: bool | None = None) -> DeepFoolResult:
    """Batched multi-class L2 DeepFool against the true labels ``y`` (see the module docstring).

    ``x``: inputs in [0, 1] of shape (N, ...); ``model(x)`` returns logits (N, K). Runs on
    ``device`` (default: the model's), ``batch_size`` inputs at a time (default: all).
    ``batched_jacobian``: get the K − 1 gradient rows in one vmapped backward (default on
    CUDA) or one backward per class (default on CPU, where vmap measured slower).
    Raises :class:`BenchError` for inputs outside [0, 1] or non-finite logits.
    """
    if not (isinstance(overshoot, (int, float)) and math.isfinite(overshoot) and overshoot >= 0):
        raise BenchError(f"DeepFool overshoot must be a finite number >= 0, got {overshoot!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise BenchError(f"DeepFool max_iter must be an integer >= 1, got {max_iter!r}")
    if candidates is not None and not (isinstance(candidates, int) and candidates >= 2):
        raise BenchError(f"DeepFool candidates must be an integer >= 2 (or all classes), got {candidates!r}")
    if x.shape[0] != y.shape[0]:
        raise BenchError(f"DeepFool got {x.shape[0]} inputs but {y.shape[0]} labels")
    check_inputs(x, "DeepFool inputs")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if batched_jacobian is None:
        batched_jacobian = device.type == "cuda"
    dtype = model_dtype(model)
    n = x.shape[0]
    batch_size = n if batch_size is None else max(1, int(batch_size))

    parts = []
    with attack_guard(model):
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size].to(device=device, dtype=dtype)
            yb = y[start:start + batch_size].to(device=device, dtype=torch.long)
            parts.append(_deepfool_batch(model, xb, yb, overshoot, max_iter, candidates, batched_jacobian))

    x_adv = torch.cat([p["x_adv"] for p in parts])
    clean_pred = torch.cat([p["clean_pred"] for p in parts])
    final_pred = torch.cat([p["final_pred"] for p in parts])
    iterations = torch.cat([p["iterations"] for p in parts])
    labels = y.to(torch.long).cpu()
    correct = clean_pred == labels
    flipped = correct & (final_pred != labels)
    flat = lambda t: t.reshape(t.shape[0], -1).double()  # noqa: E731
    norm = (flat(x_adv) - flat(x.cpu())).norm(dim=1)
    x_norm = flat(x.cpu()).norm(dim=1)
    nan = torch.full_like(norm, math.nan)
    norm = torch.where(flipped, norm, nan)
    rho = torch.where(flipped & (x_norm > 0), norm / x_norm.clamp_min(1e-300), nan)
    status = [MISCLASSIFIED if not c else (FLIPPED if f else NOT_FLIPPED)
              for c, f in zip(correct.tolist(), flipped.tolist())]
    num_classes = parts[0]["num_classes"]
    return DeepFoolResult(x_adv=x_adv, norm=norm, rho=rho, iterations=iterations, status=status,
                          clean_pred=clean_pred, final_pred=final_pred, num_classes=num_classes,
                          candidates=num_classes if candidates is None else min(candidates, num_classes),
                          stats={"nonfinite_gradients": sum(p["nonfinite"] for p in parts)})


def _deepfool_batch(model, x0: torch.Tensor, y: torch.Tensor, overshoot: float, max_iter: int,
                    candidates: int | None, batched_jacobian: bool) -> dict:
    n = x0.shape[0]
    # the clean pass doubles as the first iteration's forward
    xa, logits = _forward_with_grad(model, x0)
    logits0 = logits.detach()
    num_classes = logits0.shape[1]
    if num_classes < 2:
        raise BenchError(f"DeepFool needs a model with at least 2 classes, got {num_classes}")
    if bool(((y < 0) | (y >= num_classes)).any()):
        raise BenchError(f"DeepFool labels must lie in [0, {num_classes - 1}]")
    n_other = (num_classes if candidates is None else min(candidates, num_classes)) - 1
    clean_pred = logits0.argmax(1)
    correct = clean_pred == y
    # The other candidate classes, fixed from the clean logits: the true label removed,
    # the rest by decreasing logit (with all classes, the order only breaks exact ties).
    ranked = logits0.clone()
    ranked.scatter_(1, y[:, None], -math.inf)
    others = ranked.argsort(1, descending=True)[:, :n_other]

    r_tot = torch.zeros_like(x0)
    x_adv = x0.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x0.device)
    active = correct.clone()
    nonfinite = 0
    idx = torch.arange(n, device=x0.device)          # the rows of (xa, logits)
    for it in range(max_iter):
        keep = logits.detach().argmax(1) == y[idx]   # not (or no longer) misclassified
        active[idx[~keep]] = False
        n_keep = int(keep.sum())
        if n_keep == 0:
            break
        n_done = idx.numel() - n_keep
        if n_done and n_other * n_done > n_keep:
            # Each finished input would cost K − 1 backward rows; one forward on the
            # survivors is cheaper. (A few finished rows just get zero weights.)
            idx = idx[keep]
            xa, logits = _forward_with_grad(model, x_adv[idx])
            keep = torch.ones_like(keep[:idx.numel()])
        step, ok = _linearised_step(logits, xa, y[idx], others[idx], batched_jacobian, keep)
        if not bool(ok[keep].all()):
            # A NaN/inf gradient cannot be followed: that input stops here (not flipped).
            bad = keep & ~ok
            nonfinite += int(bad.sum())
            active[idx[bad]] = False
        live = keep & ok
        rows = idx[live]
        r_tot[rows] += step[live]
        x_adv[rows] = (x0[rows] + (1.0 + overshoot) * r_tot[rows]).clamp_(0.0, 1.0)
        iterations[rows] += 1
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0 or it + 1 == max_iter:
            break
        xa, logits = _forward_with_grad(model, x_adv[idx])
    # Verification: the reported class is that of the final, clamped input, whatever the
    # loop believed (a boundary point can fall back under a different batch's rounding).
    with torch.no_grad():
        final = model(x_adv)
    check_logits(final)
    return {"x_adv": x_adv.detach().cpu(), "clean_pred": clean_pred.cpu(),
            "final_pred": final.argmax(1).cpu(), "iterations": iterations.cpu(),
            "num_classes": num_classes, "nonfinite": nonfinite}


def _forward_with_grad(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xa = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xa)
    check_logits(logits)
    return xa, logits


def _linearised_step(logits: torch.Tensor, xa: torch.Tensor, y: torch.Tensor, others: torch.Tensor,
                     batched: bool, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The DeepFool step of each input toward its nearest linearised boundary (rows ``keep`` only)."""
    b, n_other = others.shape
    dim = xa[0].numel()
    f = logits.detach().gather(1, others) - logits.detach().gather(1, y[:, None])  # (b, n_other)
    best_d = torch.full((b,), math.inf, dtype=f.dtype, device=f.device)
    best_w = torch.zeros(b, dim, dtype=xa.dtype, device=xa.device)
    best_wn = torch.ones(b, dtype=f.dtype, device=f.device)
    rows = torch.arange(b, device=xa.device)
    chunk = max(1, min(n_other, JACOBIAN_BLOCK // max(1, b * dim)))
    for lo in range(0, n_other, chunk):
        cols = others[:, lo:lo + chunk]                        # (b, c)
        c = cols.shape[1]
        # grad_outputs of slot j: e_{k_j} − e_y, so each backward gives ∇(f_k − f_y) directly
        go = torch.zeros(c, b, logits.shape[1], dtype=logits.dtype, device=logits.device)
        go.scatter_(2, cols.t()[:, :, None], 1.0)
        go[:, rows, y] -= 1.0
        go[:, ~keep] = 0.0
        last = lo + chunk >= n_other
        w = _vector_jacobian(logits, xa, go, batched, retain=not last).reshape(c, b, dim)
        wn = w.norm(dim=2).t()                                 # (b, c)
        d = f[:, lo:lo + c].abs() / (wn + NORM_FLOOR)
        d = torch.where(torch.isfinite(d), d, torch.full_like(d, math.inf))
        dmin, j = d.min(1)
        better = dmin < best_d
        if bool(better.any()):
            best_d = torch.where(better, dmin, best_d)
            best_w[better] = w[j[better], rows[better]]
            best_wn = torch.where(better, wn[rows, j], best_wn)
    ok = torch.isfinite(best_d) & torch.isfinite(best_w).all(1)
    scale = ((best_d + STEP_EPSILON) / (best_wn + NORM_FLOOR)).to(best_w.dtype)
    step = torch.where(ok[:, None], scale[:, None] * best_w, torch.zeros_like(best_w))
    return step.reshape(xa.shape), ok


def _vector_jacobian(logits: torch.Tensor, xa: torch.Tensor, go: torch.Tensor, batched: bool,
                     retain: bool) -> torch.Tensor:
    """(c, b, ...) gradients of ⟨go[j], logits⟩ w.r.t. the inputs, one row per slot j."""
    if batched and go.shape[0] > 1:
        try:
            # retain_graph: a failed batched attempt must leave the graph for the fallback
            (g,) = torch.autograd.grad(logits, xa, go, retain_graph=True, is_grads_batched=True)
            return g
        except RuntimeError:
            pass  # an op without a batching rule: fall back to one backward per slot
    rows = []
    for j in range(go.shape[0]):
        (g,) = torch.autograd.grad(logits, xa, go[j], retain_graph=retain or j + 1 < go.shape[0])
        rows.append(g)
    return torch.stack(rows)


# ----- as an attack method (``attacks`` evaluator, ``bench list attacks``) ----------------

from bench.attacks.library import AttackInfo, MethodOptions  # noqa: E402
from bench.attacks.methods import register_attack  # noqa: E402


@dataclass(frozen=True)
class DeepFoolOptions(MethodOptions):
    """Settings of our DeepFool (the ``deepfool`` evaluator and the ``deepfool-l2`` method)."""

    overshoot: float = 0.02
    max_iter: int = 50
    candidates: int | None = None    # None: all classes
    batch_size: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.overshoot) and self.overshoot >= 0):
            raise ValueError(f"overshoot must be a finite number >= 0, got {self.overshoot}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.candidates is not None and self.candidates < 2:
            raise ValueError(f"candidates must be >= 2 (or null for all classes), got {self.candidates}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# "deepfool" names the evaluator (the paper's metric, result key and columns); the same algorithm
# as one attack method among the others is "deepfool-l2" (beside "deepfool-foolbox").
@register_attack("deepfool-l2", norm="L2", kind="min_norm", library="bench", options=DeepFoolOptions,
                 linearisation=True)
def deepfool_method(model, x, y, eps, opts: DeepFoolOptions, info: AttackInfo):
    """Our batched multi-class L2 DeepFool (Moosavi-Dezfooli et al., CVPR 2016), verified. Defaults: overshoot 0.02, 50 iterations, all classes."""
    return deepfool(model, x, y, overshoot=opts.overshoot, max_iter=opts.max_iter, candidates=opts.candidates,
                    batch_size=opts.batch_size, device=info.device).x_adv.to(x.device)
