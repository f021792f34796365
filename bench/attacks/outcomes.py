"""The one vocabulary for what an attack did to one input (every evaluator's ``per_input.status``).

* ``flipped``: classified correctly, and a verified adversarial of another class was found;
* ``not_flipped``: classified correctly, and no attack (or not this one) found an adversarial;
* ``misclassified``: the model already gets the clean input wrong; never attacked, never a success.

Results written before this vocabulary used two others (DeepFool: ``already_misclassified``;
best_known: ``unflipped`` and ``misclassified``): :func:`canonical` reads every one of them,
so stored results stay readable. The count keys (``n_not_flipped``, ``n_unflipped``,
``n_already_misclassified``) are leaderboard and baseline keys and keep their names.
"""
from __future__ import annotations

FLIPPED = "flipped"
NOT_FLIPPED = "not_flipped"
MISCLASSIFIED = "misclassified"
STATUSES = (FLIPPED, NOT_FLIPPED, MISCLASSIFIED)

# words of stored results written before the vocabulary was unified
LEGACY = {"already_misclassified": MISCLASSIFIED, "unflipped": NOT_FLIPPED}


def canonical(status: str) -> str:
    """A stored status word in the current vocabulary (legacy words mapped, unknown ones refused)."""
    word = LEGACY.get(status, status)
    if word not in STATUSES:
        raise ValueError(f"unknown attack outcome {status!r} (known: {', '.join(STATUSES)})")
    return word


def canonical_all(statuses) -> list[str]:
    return [canonical(s) for s in statuses]
