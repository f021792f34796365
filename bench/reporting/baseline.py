"""Baselines: a suite's per-plugin statistics frozen into a JSON file, for ``bench check``.

    {"schema": 1, "kind": "lpc-bench-baseline", "suite": "digits-ci",
     "suite_config": {...},                        # config.json's suite (identity: bench.runs.folder)
     "commit": "...", "hardware": [...], "finished": "...",
     "metrics": {plugin: {metric: {"mean": m, "std": s | null, "n": k}}},
     "claims": {claim: {"status": "holds" | "does not hold" | "skipped", "value": x}},
     "correlation": {"r": r, "n": k} | null}

The file holds no wall-clock time of its own (its dates come from the runs' provenance),
so writing it twice from the same runs gives the same bytes. A baseline fits runs when
their configurations agree on everything that determines a run's numbers
(``bench.runs.folder.suite_differences``, the same definition ``bench run`` uses);
a baseline written before plugins owned their parameters is read through
``bench.config.migrate``.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.io import atomic_write_json
from bench.reporting.claims import evaluate_claims
from bench.reporting.markdown import incomplete_lines
from bench.reporting.summary import SuiteSummary, require_counted, summarise_suite
from bench.runs.folder import NON_IDENTITY_KEYS, mixed_configs, suite_differences

BASELINE_SCHEMA = 1
BASELINE_KIND = "lpc-bench-baseline"


def default_path(suite: str) -> Path:
    """``bench/baselines/<suite>.json`` inside the source tree (where CI reads it)."""
    return Path(__file__).resolve().parents[1] / "baselines" / f"{suite}.json"


def _without_local(config: dict) -> dict:
    """The suite dict without the keys that cannot change a number (data paths, runtime, prose)."""
    suite = json.loads(json.dumps(config.get("suite", {})))
    for dotted in NON_IDENTITY_KEYS:
        *parents, key = dotted.split(".")
        node = suite
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return suite


def baseline_dict(summary: SuiteSummary) -> dict:
    provs = summary.provenances
    finished = sorted(p["finished"] for p in provs if p.get("finished"))
    claims = evaluate_claims(summary.stats(), summary.correlations())
    corr = summary.correlations().get("rho")
    return {
        "schema": BASELINE_SCHEMA,
        "kind": BASELINE_KIND,
        "suite": summary.suite,
        "suite_config": _without_local(summary.config),
        "commit": ", ".join(sorted({p.get("commit", "unknown") for p in provs})) or "unknown",
        "hardware": sorted({p.get("hardware", "unknown") for p in provs}),
        "finished": finished[-1] if finished else None,
        "selection": "best learning rate per plugin and seed by validation accuracy",
        "metrics": {p.plugin: {k: s.as_dict() for k, s in p.stats.items() if s is not None}
                    for p in summary.plugins},
        "claims": {c.key: {"status": c.status, "value": c.value} for c in claims},
        "correlation": None if corr is None else {"r": corr.r, "n": corr.n},
    }


def write_baseline(runs_root: Path, suite: str | None, out: Path | None = None, *,
                   imports: tuple[str, ...] = ()) -> Path:
    summary = _complete_summary(Path(runs_root), suite, imports)
    path = Path(out) if out else default_path(summary.suite)
    atomic_write_json(path, baseline_dict(summary))
    return path


def _complete_summary(runs_root: Path, suite: str | None, imports: tuple[str, ...] = ()) -> SuiteSummary:
    """The summary of a suite's runs that can serve as a reference: every run done, one configuration."""
    summary = summarise_suite(runs_root, suite, imports=imports)
    require_counted(summary, runs_root)
    if summary.not_counted:
        listing = "\n".join(incomplete_lines(summary.not_counted))
        raise BenchError(f"{len(summary.not_counted)} run(s) of suite {summary.suite} failed or are unfinished; "
                         f"a baseline needs every run done:\n{listing}")
    mixed = mixed_configs(summary.records)
    if mixed:
        raise BenchError(f"the runs of suite {summary.suite} were made with different configurations ({mixed})")
    return summary


def load_baseline(path: Path, summary: SuiteSummary) -> dict:
    """Read and validate a baseline for the suite of ``summary``; one clear BenchError otherwise.
    ``path`` may also be a runs tree (e.g. the committed ``leaderboards/runs``): its runs of
    the same suite are summarised into a baseline on the fly, as ``bench baseline`` would."""
    path = Path(path)
    if path.is_dir():
        data = baseline_dict(_complete_summary(path, summary.suite))
    elif not path.is_file():
        raise BenchError(f"baseline file {path} does not exist (write one with: bench baseline --suite "
                         f"{summary.suite} --runs DIR)")
    else:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BenchError(f"baseline file {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
        raise BenchError(f"{path} is not an lpc-bench baseline (no \"kind\": \"{BASELINE_KIND}\")")
    if data.get("schema") != BASELINE_SCHEMA:
        raise BenchError(f"{path} has baseline schema {data.get('schema')!r}; this lpc-bench reads schema "
                         f"{BASELINE_SCHEMA}: regenerate it with bench baseline --suite {data.get('suite', 'S')}")
    if data.get("suite") != summary.suite:
        raise BenchError(f"{path} is a baseline of suite {data.get('suite')!r}, not of {summary.suite!r}")
    if not isinstance(data.get("metrics"), dict):
        raise BenchError(f"{path} has no per-plugin metrics")
    differences = suite_differences(data.get("suite_config") or {}, summary.config.get("suite") or {})
    if differences:
        raise BenchError(f"{path} was made with a different configuration of suite {summary.suite} "
                         f"(baseline vs runs: {differences}); regenerate the baseline "
                         f"or run the suite as configured")
    return data
