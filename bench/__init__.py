"""lpc-bench: train every head/loss plugin with one shared recipe, attack it, measure its
latent geometry, and write leaderboards. Entry point: ``python -m bench run --suite S``."""
__version__ = "0.1.0"
