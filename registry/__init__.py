"""Head/loss plugins for lpc-bench: the contract, the registry, the 11 built-in models and the positive controls (PGD-AT, TRADES, InputGradNorm, LPC-PGD-AT).

    from lpc import GeometricSchedule
    from registry import list_plugins, create_plugin
    head = create_plugin("LPC", feature_dim=512, num_classes=10,
                         latent_dims={"narrow": 16, "intermediate": 64, "wide": 128},
                         gamma=GeometricSchedule(1e-2, 1.05, 1e3))   # a parameter of LPC.Params
"""
from registry._registry import Registry, UnknownNameError
from registry.base import (LATENT_WIDTHS, PLUGINS, Batch, HeadOutput, NoParams, Plugin, create_plugin,
                           get_plugin_class, list_plugins, plugin_params, register_plugin)
from registry import plugins as _builtin_plugins  # noqa: F401,E402  (registers the built-ins)

__all__ = [
    "Registry", "UnknownNameError", "LATENT_WIDTHS", "PLUGINS", "Batch", "HeadOutput", "NoParams", "Plugin",
    "create_plugin", "get_plugin_class", "list_plugins", "plugin_params", "register_plugin",
]
