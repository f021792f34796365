"""lpc-bench: train every head/loss plugin with one shared recipe, attack it, measure its
latent geometry, and write leaderboards. Entry point: ``python -m bench run --suite S``."""
__version__ = "0.1.0"


def __getattr__(name: str):
    # ``from bench import evaluate``: loaded on first use, so that ``import bench`` stays light
    if name == "evaluate":
        from bench.training.evaluate import evaluate
        return evaluate
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
