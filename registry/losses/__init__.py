"""Loss functions used by the built-in plugins, one per file."""
from registry.losses.margin import additive_angular_margin_logits, large_margin_cosine_logits
from registry.losses.supcon import supervised_contrastive_loss

__all__ = ["supervised_contrastive_loss", "additive_angular_margin_logits", "large_margin_cosine_logits"]
