"""What the report's figures need from a model, saved with its result at evaluation time.

The report draws from run folders alone (no dataset, no checkpoint, no model rebuilt),
so anything a figure shows that is not an evaluator's number is summarised here and
stored in ``result.json["figure_data"]``:

* ``latent_histograms``: per latent dimension (the first ``MAX_DIMS``), a histogram of the
  training split's latent values (the paper's Fig. 2): ``{"split", "dims", "n", "hist":
  [{"edges": [...], "counts": [...]}, ...]}`` with ``BINS`` equal bins over the values'
  range (one bin of width 1 around a dimension whose values are all equal, as matplotlib
  draws it).
"""
from __future__ import annotations

import numpy as np
import torch

MAX_DIMS = 16
BINS = 60


def latent_histograms(latents: torch.Tensor, *, split: str, max_dims: int = MAX_DIMS, bins: int = BINS) -> dict:
    z = latents.detach().double().cpu().numpy()
    if z.ndim != 2 or z.shape[0] == 0:
        return {"split": split, "dims": 0, "n": int(z.shape[0]) if z.ndim else 0, "hist": []}
    hist = []
    for i in range(min(z.shape[1], max_dims)):
        values = z[:, i][np.isfinite(z[:, i])]
        if values.size == 0:
            hist.append({"edges": [], "counts": []})
            continue
        span = float(np.ptp(values))
        counts, edges = (np.histogram(values, bins=bins) if span > 0
                         else np.histogram(values, bins=1, range=(values[0] - 0.5, values[0] + 0.5)))
        hist.append({"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]})
    return {"split": split, "dims": int(z.shape[1]), "n": int(z.shape[0]), "hist": hist}
