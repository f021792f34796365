"""``bench report``: run folders → summary → claims → tables and figures → Markdown, CSV, JSON.

``build_report(runs_root, suite, out_dir)`` reads every run folder of one suite (nothing
from memory, no dataset, no model), reduces it to per-plugin statistics
(``bench.reporting.summary``), evaluates the paper's shape claims on them
(``bench.reporting.claims``), draws the figures (``bench.reporting.figures``) and writes

    <out_dir>/<suite>.md                 the leaderboard page (``bench.reporting.markdown``)
    <out_dir>/<suite>.csv                every column, one row per plugin (``bench.reporting.exports``)
    <out_dir>/<suite>.robustbench.json   RobustBench-shaped entries, one per plugin
    <out_dir>/<suite>-figures/*.png

The output is deterministic: the same run folders give the same files.
"""
from __future__ import annotations

from pathlib import Path

from bench.core.io import atomic_write_text
from bench.reporting import markdown
from bench.reporting.claims import evaluate_claims
from bench.reporting.exports import write_exports
from bench.reporting.summary import SuiteSummary, summarise_suite


def build_report(runs_root: Path, suite: str | None, out_dir: Path, *, figures: bool = True,
                 imports: tuple[str, ...] = ()) -> Path:
    """Write the leaderboard of ``suite`` (and its data files and figures); return the page's path."""
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    summary = summarise_suite(runs_root, suite, imports=imports)
    claims = evaluate_claims(summary.stats(), summary.correlations())
    out_dir.mkdir(parents=True, exist_ok=True)
    figure_notes = make_figures(summary, out_dir) if figures else {}
    exports = write_exports(summary, out_dir)
    links = [f"[{path.name}]({path.name})" for path in exports]
    text = markdown.render(summary, claims, out_dir, figure_notes, links)
    path = out_dir / f"{summary.suite}.md"
    atomic_write_text(path, text)
    return path


def make_figures(summary: SuiteSummary, out_dir: Path) -> dict[str, list[str]]:
    """Draw the figures; per section, Markdown lines (image links or a note why not)."""
    from bench.reporting import figures
    return figures.draw_all(summary, out_dir)
