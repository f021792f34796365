"""Built-in plugins: importing this package registers the 11 models of the paper's Table III."""
from registry.plugins import baselines, lpc_family, margin, supcon  # noqa: F401  (registration)
