"""Built-in plugins: importing this package registers the 11 models of the paper's Table III,
then the positive controls (PGD-AT, TRADES, InputGradNorm) and LPC-PGD-AT."""
from registry.plugins import baselines, lpc_family, margin, supcon  # noqa: F401  (registration)
from registry.plugins import input_gradient, lpc_pgd_at, pgd_at, trades  # noqa: F401,E402
