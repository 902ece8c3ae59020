"""recforge-report: finished runs -> comparison tables (Markdown, CSV, LaTeX), plots and one HTML page.

collect (run directories -> one row per run) -> aggregate (mean ± std over seeds, best, paired tests)
-> render (text formats) and plots (PNG bytes); cli writes the files.
"""
from recforge.report.aggregate import Table, aggregate, default_row_keys
from recforge.report.collect import collect_runs

__all__ = ["Table", "aggregate", "collect_runs", "default_row_keys"]
