"""The README's "Use LPC in your own training loop" block runs as written, and paces γ per
optimizer step as its comments say (a README example that rots is worse than none)."""
from __future__ import annotations

import math

from conftest import REPO


def test_the_readme_library_example_runs_and_paces_gamma_by_steps():
    text = (REPO / "README.md").read_text()
    block = text.split("## Use LPC in your own training loop", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, "README.md (library example)", "exec"), scope)
    # the last of its 1,000 steps is in reference epoch 999 // 390 = 2: γ = 1e-2 · 1.05²
    assert scope["g"] == 1e-2 * 1.05 ** 2
    assert math.isfinite(float(scope["loss"].detach()))
