"""The standard attacks, through torchattacks and foolbox, behind one calling convention.

Every method here is ``fn(model, x, y, eps, opts, info) -> x_adv``: ``x`` holds only inputs
the model classifies correctly (the evaluator filters them, which also masks foolbox's
habit of counting misclassified inputs as successes), ``eps`` is the budget of a
fixed-ε attack (``None`` for minimum-norm ones). Nothing here decides success: the
evaluator re-classifies and measures every returned input itself.

Pitfalls guarded (by the evaluator and :func:`bench.attacks.methods.attack_guard`):
parameter gradients zeroed and eval mode restored after each call; the global random
generator forked and seeded (APGD and Square reseed it themselves); inputs checked to lie
in [0, 1]; APGD-T's target count bounded by the real number of classes (torchattacks
assumes 10); HopSkipJump given starting points from the inputs themselves (its default
noise initialisation aborts the whole batch when it fails on one input).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bench.attacks.methods import register_attack
from bench.core.errors import BenchError


@dataclass
class AttackNotes:
    """What a method reports beside its adversarials (e.g. AutoAttack's own checks); the
    evaluator stores it in the method's entry. One per (method, ε) call."""

    values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttackInfo:
    """What a method may need beyond the inputs."""

    num_classes: int
    seed: int
    device: torch.device
    notes: AttackNotes | None = None   # where a method may report extra facts (None: nowhere)


@dataclass(frozen=True)
class MethodOptions:
    max_inputs: int | None = None   # attack only the first N inputs of the subset (None: all)
    # fixed-ε methods: run only at these budgets of the suite's grid (None: the whole grid);
    # a trim that the result records as a deviation
    eps: tuple[float | str, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_inputs is not None and self.max_inputs < 1:
            raise ValueError(f"max_inputs must be >= 1, got {self.max_inputs}")
        if self.eps is not None:
            if not self.eps:
                raise ValueError("eps must name at least one budget of the grid (or be null for all)")
            object.__setattr__(self, "eps", tuple(parse_budget(v) for v in self.eps))


def parse_budget(value: float | str) -> float:
    """A budget as a number: 0.5, or a fraction written as text, '8/255'."""
    if isinstance(value, str):
        num, sep, den = value.partition("/")
        try:
            return float(num) / float(den) if sep else float(num)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read the budget {value!r} (use a number or a fraction like 8/255)") from None
    return float(value)


def _need_images(x: torch.Tensor, name: str) -> None:
    # torchattacks reshapes norms to (N, 1, 1, 1): flat inputs would broadcast wrongly
    if x.dim() != 4:
        raise BenchError(f"{name} needs image inputs (N, C, H, W), got shape {tuple(x.shape)}")


def _positive(name: str, **values) -> None:
    for key, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{name}: {key} must be > 0, got {value}")


# ----- torchattacks: fixed-ε ------------------------------------------------------------

@dataclass(frozen=True)
class FGSMOptions(MethodOptions):
    pass


@register_attack("fgsm", norm="Linf", kind="fixed_eps", library="torchattacks", options=FGSMOptions, loss="ce")
def fgsm(model, x, y, eps, opts: FGSMOptions, info: AttackInfo):
    """FGSM (Goodfellow et al., ICLR 2015): x + ε·sign(∇ CE), one step, L∞."""
    import torchattacks
    _need_images(x, "fgsm")
    return torchattacks.FGSM(model, eps=eps)(x, y)


@dataclass(frozen=True)
class PGDOptions(MethodOptions):
    steps: int = 20
    step_size: float | None = None   # None: 2.5·ε/steps (Madry et al.)
    random_start: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("pgd", steps=self.steps, step_size=self.step_size)


def _alpha(opts: PGDOptions, eps: float) -> float:
    return opts.step_size if opts.step_size is not None else 2.5 * eps / opts.steps


@register_attack("pgd-linf", norm="Linf", kind="fixed_eps", library="torchattacks", options=PGDOptions, loss="ce")
def pgd_linf(model, x, y, eps, opts: PGDOptions, info: AttackInfo):
    """PGD (Madry et al., ICLR 2018), L∞: signed CE-gradient steps projected on the ε-ball. Defaults: 20 steps of 2.5·ε/20, random start."""
    import torchattacks
    _need_images(x, "pgd-linf")
    return torchattacks.PGD(model, eps=eps, alpha=_alpha(opts, eps), steps=opts.steps,
                            random_start=opts.random_start)(x, y)


@register_attack("pgd-l2", norm="L2", kind="fixed_eps", library="torchattacks", options=PGDOptions, loss="ce")
def pgd_l2(model, x, y, eps, opts: PGDOptions, info: AttackInfo):
    """PGD (Madry et al., ICLR 2018), L2: normalised CE-gradient steps projected on the ε-ball. Defaults: 20 steps of 2.5·ε/20, random start."""
    import torchattacks
    _need_images(x, "pgd-l2")
    return torchattacks.PGDL2(model, eps=eps, alpha=_alpha(opts, eps), steps=opts.steps,
                              random_start=opts.random_start)(x, y)


@dataclass(frozen=True)
class APGDOptions(MethodOptions):
    steps: int = 20                  # AutoAttack: 100
    restarts: int = 1
    targets: int = 9                 # APGD-T only: target classes (AutoAttack: 9)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("apgd", steps=self.steps, restarts=self.restarts, targets=self.targets)


def _apgd(model, x, y, eps, opts, info, norm, loss):
    """Untargeted APGD (torchattacks) on ``loss``: "ce" or "dlr" (the scale-invariant margin)."""
    import torchattacks
    _need_images(x, f"apgd-{loss}-{norm.lower()}")
    return torchattacks.APGD(model, norm=norm, eps=eps, steps=opts.steps, n_restarts=opts.restarts,
                             seed=info.seed, loss=loss)(x, y)


def _apgd_t(model, x, y, eps, opts, info, norm):
    import torchattacks
    _need_images(x, f"apgd-t-{norm.lower()}")
    if info.num_classes < 4:
        # its targeted DLR loss divides by the gap between the 1st and 3rd/4th logits
        raise BenchError(f"apgd-t needs at least 4 classes, the model has {info.num_classes}")
    # torchattacks derives the number of targets from n_classes (default 10): bound it by
    # the real class count, or it indexes past the logits of a model with fewer classes.
    targets = min(opts.targets, info.num_classes - 1)
    return torchattacks.APGDT(model, norm=norm, eps=eps, steps=opts.steps, n_restarts=opts.restarts,
                              seed=info.seed, n_classes=targets + 1)(x, y)


@register_attack("apgd-ce-linf", norm="Linf", kind="fixed_eps", library="torchattacks", options=APGDOptions,
                 loss="ce")
def apgd_ce_linf(model, x, y, eps, opts, info):
    """APGD-CE (Croce & Hein, ICML 2020; AutoAttack), L∞: step-size-adaptive PGD on CE. Defaults: 20 steps, 1 restart."""
    return _apgd(model, x, y, eps, opts, info, "Linf", "ce")


@register_attack("apgd-ce-l2", norm="L2", kind="fixed_eps", library="torchattacks", options=APGDOptions,
                 loss="ce")
def apgd_ce_l2(model, x, y, eps, opts, info):
    """APGD-CE (Croce & Hein, ICML 2020; AutoAttack), L2. Defaults: 20 steps, 1 restart."""
    return _apgd(model, x, y, eps, opts, info, "L2", "ce")


@register_attack("apgd-t-linf", norm="Linf", kind="fixed_eps", library="torchattacks", options=APGDOptions,
                 loss="margin", min_classes=4)
def apgd_t_linf(model, x, y, eps, opts, info):
    """APGD-T (Croce & Hein, ICML 2020; AutoAttack), L∞: targeted DLR loss over the top classes. Defaults: 20 steps, 9 targets."""
    return _apgd_t(model, x, y, eps, opts, info, "Linf")


@register_attack("apgd-t-l2", norm="L2", kind="fixed_eps", library="torchattacks", options=APGDOptions,
                 loss="margin", min_classes=4)
def apgd_t_l2(model, x, y, eps, opts, info):
    """APGD-T (Croce & Hein, ICML 2020; AutoAttack), L2: targeted DLR loss. Defaults: 20 steps, 9 targets."""
    return _apgd_t(model, x, y, eps, opts, info, "L2")


@register_attack("apgd-dlr-linf", norm="Linf", kind="fixed_eps", library="torchattacks", options=APGDOptions,
                 loss="margin", min_classes=3)
def apgd_dlr_linf(model, x, y, eps, opts, info):
    """APGD-DLR (Croce & Hein, ICML 2020), L∞: APGD on the margin loss −(f_y − max_{k≠y} f_k)/(f_π1 − f_π3), invariant to the logits' scale. Defaults: 20 steps, 1 restart."""
    return _apgd(model, x, y, eps, opts, info, "Linf", "dlr")


@register_attack("apgd-dlr-l2", norm="L2", kind="fixed_eps", library="torchattacks", options=APGDOptions,
                 loss="margin", min_classes=3)
def apgd_dlr_l2(model, x, y, eps, opts, info):
    """APGD-DLR (Croce & Hein, ICML 2020), L2: APGD on the scale-invariant DLR margin loss. Defaults: 20 steps, 1 restart."""
    return _apgd(model, x, y, eps, opts, info, "L2", "dlr")


@dataclass(frozen=True)
class SquareOptions(MethodOptions):
    queries: int = 1000              # AutoAttack: 5,000
    restarts: int = 1
    p_init: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("square", queries=self.queries, restarts=self.restarts, p_init=self.p_init)


def _square(model, x, y, eps, opts, info, norm):
    import torchattacks
    _need_images(x, f"square-{norm.lower()}")
    return torchattacks.Square(model, norm=norm, eps=eps, n_queries=opts.queries, n_restarts=opts.restarts,
                               p_init=opts.p_init, seed=info.seed)(x, y)


@register_attack("square-linf", norm="Linf", kind="fixed_eps", library="torchattacks", options=SquareOptions,
                 loss="margin")
def square_linf(model, x, y, eps, opts, info):
    """Square attack (Andriushchenko et al., ECCV 2020; AutoAttack), L∞, score-based (no gradients). Defaults: 1,000 queries, p_init 0.8."""
    return _square(model, x, y, eps, opts, info, "Linf")


@register_attack("square-l2", norm="L2", kind="fixed_eps", library="torchattacks", options=SquareOptions,
                 loss="margin")
def square_l2(model, x, y, eps, opts, info):
    """Square attack (Andriushchenko et al., ECCV 2020), L2, score-based. Defaults: 1,000 queries, p_init 0.8."""
    return _square(model, x, y, eps, opts, info, "L2")


# ----- torchattacks: minimum-norm -------------------------------------------------------

@dataclass(frozen=True)
class CWOptions(MethodOptions):
    c: float = 1.0
    kappa: float = 0.0
    steps: int = 100
    lr: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("cw-l2", c=self.c, steps=self.steps, lr=self.lr)
        if self.kappa < 0:
            raise ValueError(f"cw-l2: kappa must be >= 0, got {self.kappa}")


@register_attack("cw-l2", norm="L2", kind="min_norm", library="torchattacks", options=CWOptions, loss="margin")
def cw_l2(model, x, y, eps, opts: CWOptions, info: AttackInfo):
    """Carlini & Wagner L2 (IEEE S&P 2017): min ‖δ‖² + c·max(f_y − max_{k≠y} f_k, −κ) in tanh space. Defaults: c 1, κ 0, 100 Adam steps, lr 0.01.

    The tanh reparametrisation cannot move pixels sitting exactly at 0 or 1, and one
    fixed c (no binary search) makes the norms upper bounds, not minima.
    """
    import torchattacks
    return torchattacks.CW(model, c=opts.c, kappa=opts.kappa, steps=opts.steps, lr=opts.lr)(x, y)


# ----- foolbox: minimum-norm ------------------------------------------------------------

def _foolbox_min_norm(attack, model, x, y, info: AttackInfo, starting_points=None):
    import foolbox as fb
    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device=info.device)
    kwargs = {} if starting_points is None else {"starting_points": starting_points}
    try:
        _, clipped, _ = attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=None, **kwargs)
    except AssertionError:  # foolbox's bound check; the evaluator checks first, so keep the message clear
        raise BenchError("foolbox rejected the inputs as outside the model bounds [0, 1]") from None
    return clipped


@dataclass(frozen=True)
class FoolboxDeepFoolOptions(MethodOptions):
    steps: int = 50
    overshoot: float = 0.02
    candidates: int | None = None    # None: all classes (foolbox's own default is 10)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("deepfool-foolbox", steps=self.steps)
        if self.overshoot < 0 or (self.candidates is not None and self.candidates < 2):
            raise ValueError("deepfool-foolbox: overshoot must be >= 0 and candidates >= 2")


@register_attack("deepfool-foolbox", norm="L2", kind="min_norm", library="foolbox",
                 options=FoolboxDeepFoolOptions, linearisation=True)
def deepfool_foolbox(model, x, y, eps, opts: FoolboxDeepFoolOptions, info: AttackInfo):
    """foolbox L2DeepFool (Moosavi-Dezfooli et al., CVPR 2016), as a cross-check of ours. Defaults: 50 steps, overshoot 0.02, all classes.

    foolbox's reference class is the clean prediction, which equals the true label on the
    correctly classified inputs the evaluator passes.
    """
    import foolbox as fb
    attack = fb.attacks.L2DeepFoolAttack(steps=opts.steps, candidates=opts.candidates or info.num_classes,
                                         overshoot=opts.overshoot)
    return _foolbox_min_norm(attack, model, x, y, info)


@dataclass(frozen=True)
class FMNOptions(MethodOptions):
    steps: int = 100
    max_stepsize: float = 1.0
    gamma: float = 0.05
    binary_search_steps: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("fmn-l2", steps=self.steps, max_stepsize=self.max_stepsize, gamma=self.gamma)


@register_attack("fmn-l2", norm="L2", kind="min_norm", library="foolbox", options=FMNOptions)
def fmn_l2(model, x, y, eps, opts: FMNOptions, info: AttackInfo):
    """Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021), L2: adaptive ε-ball projection of gradient steps. Defaults: 100 steps, α₀ 1, γ 0.05."""
    import foolbox as fb
    attack = fb.attacks.L2FMNAttack(steps=opts.steps, max_stepsize=opts.max_stepsize, gamma=opts.gamma,
                                    binary_search_steps=opts.binary_search_steps)
    return _foolbox_min_norm(attack, model, x, y, info)


@dataclass(frozen=True)
class DDNOptions(MethodOptions):
    steps: int = 100
    init_epsilon: float = 1.0
    gamma: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("ddn-l2", steps=self.steps, init_epsilon=self.init_epsilon, gamma=self.gamma)


@register_attack("ddn-l2", norm="L2", kind="min_norm", library="foolbox", options=DDNOptions)
def ddn_l2(model, x, y, eps, opts: DDNOptions, info: AttackInfo):
    """Decoupled Direction and Norm (Rony et al., CVPR 2019), L2. Defaults: 100 steps, ε₀ 1, γ 0.05."""
    import foolbox as fb
    attack = fb.attacks.DDNAttack(steps=opts.steps, init_epsilon=opts.init_epsilon, gamma=opts.gamma)
    return _foolbox_min_norm(attack, model, x, y, info)


@dataclass(frozen=True)
class HSJOptions(MethodOptions):
    max_inputs: int | None = 20      # decision-based: expensive, so a small subset by default
    steps: int = 16                  # foolbox: 64
    initial_gradient_eval_steps: int = 50
    max_gradient_eval_steps: int = 400
    noise_starts: int = 100          # uniform-noise candidates for starting points

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_starts < 0:
            raise ValueError(f"hsj-l2: noise_starts must be >= 0, got {self.noise_starts}")
        _positive("hsj-l2", steps=self.steps, initial_gradient_eval_steps=self.initial_gradient_eval_steps,
                  max_gradient_eval_steps=self.max_gradient_eval_steps)


@register_attack("hsj-l2", norm="L2", kind="min_norm", library="foolbox", options=HSJOptions)
def hsj_l2(model, x, y, eps, opts: HSJOptions, info: AttackInfo):
    """HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020), L2, decision-based (labels only). Defaults: 20 inputs, 16 steps, 50→400 queries per gradient estimate.

    Starts from the nearest point of another class among the batch and ``noise_starts``
    uniform-noise images (foolbox's own noise initialisation raises for the whole batch
    when one input resists it).
    """
    import foolbox as fb
    # starting points: the nearest input of another class, among the batch itself and
    # uniform-noise images (seeded by the evaluator), so that one class per batch still works
    noise = torch.rand((opts.noise_starts, *x.shape[1:]), device=x.device, dtype=x.dtype)
    pool = torch.cat([x, noise])
    with torch.no_grad():
        pred = torch.cat([model(pool[i:i + 1024]).argmax(1) for i in range(0, len(pool), 1024)])
    dist = torch.cdist(x.flatten(1).float(), pool.flatten(1).float())
    dist[pred[None, :] == y[:, None]] = float("inf")   # only points of another class
    nearest = dist.argmin(1)
    usable = torch.isfinite(dist[torch.arange(len(x)), nearest])
    if not bool(usable.any()):
        return x.clone()  # no starting point of another class: reported as failures
    attack = fb.attacks.HopSkipJumpAttack(steps=opts.steps,
                                          initial_gradient_eval_steps=opts.initial_gradient_eval_steps,
                                          max_gradient_eval_steps=opts.max_gradient_eval_steps)
    adv = x.clone()
    idx = usable.nonzero().squeeze(1)
    adv[idx] = _foolbox_min_norm(attack, model, x[idx], y[idx], info, starting_points=pool[nearest[idx]])
    return adv


# ----- adv-lib: minimum-norm (AttackBench's top-ranked implementations) -------------------
#
# AttackBench (Cinà et al. 2024) ranks adv_lib's DDN (0.93) and FMN (0.91) highest among the
# L2 minimum-norm attacks on CIFAR-10 at 2,000 forward + backward passes per input (foolbox's
# FMN-L2: 0.54). Each step of both is one forward and one backward pass per input, so
# ``steps`` is the budget: 2·steps passes per input (FMN adds ``binary_search_steps``
# forwards only with starting points, which we never pass). The ``attacks`` evaluator
# measures the passes it actually made (``queries`` in the method's entry).

@dataclass(frozen=True)
class AdvLibDDNOptions(MethodOptions):
    steps: int = 100
    init_norm: float = 1.0
    gamma: float = 0.05
    levels: int | None = None        # None: continuous (adv_lib's default 256 quantises the output)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("ddn-l2-advlib", steps=self.steps, init_norm=self.init_norm, gamma=self.gamma)
        if self.levels is not None and self.levels < 2:
            raise ValueError(f"ddn-l2-advlib: levels must be >= 2 (or null), got {self.levels}")


@register_attack("ddn-l2-advlib", norm="L2", kind="min_norm", library="adv_lib", options=AdvLibDDNOptions,
                 loss="ce")
def ddn_l2_advlib(model, x, y, eps, opts: AdvLibDDNOptions, info: AttackInfo):
    """Decoupled Direction and Norm (Rony et al., CVPR 2019), L2, adv_lib's implementation: normalised CE-gradient steps with a cosine-annealed step, the norm ε scaled by 1 ∓ γ per step. Defaults: 100 steps, ε₀ 1, γ 0.05, no quantisation."""
    from adv_lib.attacks import ddn
    return ddn(model, x, y, steps=opts.steps, γ=opts.gamma, init_norm=opts.init_norm, levels=opts.levels)


@dataclass(frozen=True)
class AdvLibFMNOptions(MethodOptions):
    steps: int = 100
    alpha_init: float = 1.0
    alpha_final: float | None = None  # None: alpha_init / 100 (adv_lib's default)
    gamma_init: float = 0.05
    gamma_final: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("fmn-advlib", steps=self.steps, alpha_init=self.alpha_init, alpha_final=self.alpha_final,
                  gamma_init=self.gamma_init, gamma_final=self.gamma_final)


def _fmn_advlib(model, x, y, opts: AdvLibFMNOptions, norm: float):
    from adv_lib.attacks import fmn
    return fmn(model, x, y, norm=norm, steps=opts.steps, α_init=opts.alpha_init, α_final=opts.alpha_final,
               γ_init=opts.gamma_init, γ_final=opts.gamma_final)


@register_attack("fmn-l2-advlib", norm="L2", kind="min_norm", library="adv_lib", options=AdvLibFMNOptions,
                 loss="margin")
def fmn_l2_advlib(model, x, y, eps, opts: AdvLibFMNOptions, info: AttackInfo):
    """Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021), L2, adv_lib's implementation: logit-difference gradient steps projected on an adaptive ε-ball, α and γ cosine-annealed. Defaults: 100 steps, α 1 → 0.01, γ 0.05 → 0.001."""
    # Measured on the digits MLP (and on an affine model): 40 steps flip only 10–70 % of the
    # inputs. Until it first crosses the boundary, ε is reset to the linearised distance to it,
    # which a near-linear model makes exact, so the iterate lands on the boundary, not past it;
    # foolbox's fmn-l2 flips them all. Not in the digits suite; the attack unit test shows it.
    return _fmn_advlib(model, x, y, opts, 2)


@register_attack("fmn-linf-advlib", norm="Linf", kind="min_norm", library="adv_lib", options=AdvLibFMNOptions,
                 loss="margin")
def fmn_linf_advlib(model, x, y, eps, opts: AdvLibFMNOptions, info: AttackInfo):
    """Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021), L∞, adv_lib's implementation. Defaults: 100 steps, α 1 → 0.01, γ 0.05 → 0.001."""
    return _fmn_advlib(model, x, y, opts, float("inf"))
