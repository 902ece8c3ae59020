"""Render an aggregated Table as Markdown, CSV, LaTeX and one self-contained HTML page (inline CSS/JS, no URLs)."""
from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from recforge.report.aggregate import (
    Table,
    format_value,
    group_label,
    key_label,
    sort_key,
)

MARKER = "†"
TEST_NAMES = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}


@dataclass(frozen=True)
class Layout:
    """The table as rows of text keys and cells: header = row key names + one label per value column."""

    header: list[str]
    keys: list[list[str]]  # (rows, len(table.rows)) display values
    cells: list[list[pd.Series | None]]  # (rows, value columns) a line of table.cells, None when absent


def _unique(frame: pd.DataFrame) -> list[tuple]:
    """Distinct rows in order of appearance (missing values compare equal)."""
    return list({tuple(map(str, r)): tuple(r) for r in frame.itertuples(index=False)}.values())


def layout(table: Table) -> Layout:
    c = table.cells
    col_groups = sorted(_unique(c[table.cols]), key=lambda g: tuple(map(sort_key, g))) if table.cols else [()]
    columns = [(g, m) for g in col_groups for m in table.metrics]

    def label(group: tuple, metric: str) -> str:
        prefix = ", ".join(format_value(k, v) for k, v in zip(table.cols, group))
        return f"{prefix} · {metric}" if prefix else metric

    names = [*table.rows, *table.cols]
    index = {(tuple(map(str, r[:-1])), r[-1]): i for i, r in enumerate(c[[*names, "metric"]].itertuples(index=False))}
    row_groups = _unique(c[table.rows])
    keys, cells = [], []
    for rg in row_groups:
        keys.append([format_value(k, v) for k, v in zip(table.rows, rg)])
        found = [index.get((tuple(map(str, (*rg, *g))), m)) for g, m in columns]
        cells.append([c.iloc[i] if i is not None else None for i in found])
    return Layout(header=[*map(key_label, table.rows), *(label(g, m) for g, m in columns)], keys=keys, cells=cells)


def number(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.4f}"


def cell_text(cell: pd.Series | None, bold: Callable[[str], str], marker: str = MARKER, pm: str = " ± ") -> str:
    """'mean ± std (n)' with 4 decimals, the mean passed through ``bold`` when best, ``marker`` when significant."""
    if cell is None or cell["n"] == 0:
        return "–"
    mean = bold(number(cell["mean"])) if cell["best"] else number(cell["mean"])
    spread = f"{pm}{number(cell['std'])}" if not math.isnan(cell["std"]) else ""
    return f"{mean}{spread} ({cell['n']}){' ' + marker if cell['significant'] else ''}"


def notes(table: Table) -> list[str]:
    """Sentences explaining the cells: statistics, best marking, significance and untested rows."""
    lower = table.lower_better
    lines = ["Cells: mean ± sample standard deviation (number of runs); best mean per column in bold"
             + (f" (lower is better for {', '.join(lower)})." if lower else " (higher is better).")]
    if table.baseline:
        base = ",".join(f"{k}={v}" for k, v in table.baseline.items())
        lines.append(f"{MARKER}: p < {table.alpha:g} against the baseline {base} "
                     f"({TEST_NAMES[table.test]} over seeds present in both rows).")
        lay = layout(table)
        untested = [" / ".join(k) for k, row in zip(lay.keys, lay.cells)
                    if not any(c is not None and (c["baseline"] or not math.isnan(c["p"])) for c in row)]
        if untested:
            lines.append(f"Not tested (fewer than 2 paired seeds, or identical results): {'; '.join(untested)}.")
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


ALIGN_RULES = {"l": ":---", "c": ":---:", "r": "---:"}


def _md_row(cells: Sequence[Any]) -> str:
    """One table line: each cell as ``str(cell)`` with '|' escaped; an empty cell stays blank."""
    texts = (_md_escape(str(c)) for c in cells)
    return "|" + "".join(f" {t} |" if t else " |" for t in texts)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A Markdown table from a header and rows of cells (``str(cell)``), without a trailing newline.

    ``align`` has one letter per column: 'l' left, 'c' centre, 'r' right; any other letter, or none, leaves the
    column to the renderer's default. Raises ValueError when a row's length differs from the header's.
    """
    body = [list(r) for r in rows]
    if any(len(r) != len(header) for r in body):
        raise ValueError(f"every row of the table needs {len(header)} cells, one per header column")
    rule = "|" + "".join(ALIGN_RULES.get(align[i:i + 1], "---") + "|" for i in range(len(header)))
    return "\n".join([_md_row(header), rule, *map(_md_row, body)])


def markdown(table: Table, failed: pd.DataFrame | None = None) -> str:
    """The aggregated table (best means in bold, value columns right-aligned), its notes and any failed runs."""
    lay = layout(table)
    body = [[*keys, *(cell_text(c, lambda s: f"**{s}**") for c in row)] for keys, row in zip(lay.keys, lay.cells)]
    align = "-" * len(table.rows) + "r" * (len(lay.header) - len(table.rows))
    head = "".join(f"{line}\n\n" for line in table.protocol)
    out = head + markdown_table(lay.header, body, align) + "\n\n" + "\n".join(notes(table)) + "\n"
    if failed is not None and not failed.empty:
        out += "\nFailed runs:\n\n" + "".join(f"- {r.run}: {r.error}\n" for r in failed.itertuples())
    return out


def csv(table: Table) -> str:
    """Tidy CSV: one line per (row group, column group, metric) with mean, std, n, p, n_paired, flags."""
    return table.cells.to_csv(index=False, float_format="%.10g")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex(table: Table) -> str:
    """A booktabs table environment; best means in \\textbf, significance as $^\\dagger$."""
    lay = layout(table)
    spec = "l" * len(table.rows) + "r" * (len(lay.header) - len(table.rows))
    body = []
    for keys, row in zip(lay.keys, lay.cells):
        texts = [cell_text(c, lambda s: rf"\textbf{{{s}}}", marker=r"$^\dagger$", pm=r" $\pm$ ") for c in row]
        body.append(" & ".join([*map(latex_escape, keys), *texts]) + r" \\")
    caption = latex_escape(" ".join([*table.protocol, *notes(table)]))
    caption = caption.replace(" ± ", r" $\pm$ ").replace(MARKER, r"$^\dagger$")
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                      " & ".join(map(latex_escape, lay.header)) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}", ""])


HTML = jinja2.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>recforge report</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9em} code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;font-size:.9em;margin:.8em 0} th,td{padding:.35em .7em;border-bottom:1px solid #e4e4e4;text-align:left}
#results th{cursor:pointer;user-select:none;background:#f6f8fa;position:sticky;top:0;text-align:left}
#results th[aria-sort=ascending]::after{content:" ▲"} #results th[aria-sort=descending]::after{content:" ▼"}
#results td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} td.best{background:#eaf6ea}
tbody tr:hover{background:#fafafa} .note{font-size:.85em;color:#444;margin:.2em 0}
.scroll{overflow-x:auto} .plots{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0;border:1px solid #eee;padding:.5em}
figure img{max-width:560px;width:100%} figcaption{font-size:.8em;color:#555} .failed td{color:#a00}
</style></head><body>
<h1>recforge report</h1>
<p class="meta">Generated {{ generated }} from {{ n_ok }} successful run{{ "" if n_ok == 1 else "s" }}{% if n_failed %} and {{ n_failed }} failed{% endif %} under {% for s in sources %}<code>{{ s }}</code>{{ ", " if not loop.last }}{% endfor %}.</p>
<h2>Results</h2>
<p class="note">Click a column header to sort; the page also sorts on load from <code>#sort=&lt;column index&gt;&amp;desc=1</code>.</p>
{% for p in protocol %}<p class="protocol">{{ p }}</p>{% endfor %}
<div class="scroll"><table id="results"><thead><tr>{% for h in header %}<th data-numeric="{{ 0 if loop.index0 < n_keys else 1 }}" aria-sort="none">{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for c in row %}<td{% if c.cls %} class="{{ c.cls }}"{% endif %} data-value="{{ c.value }}"{% if c.title %} title="{{ c.title }}"{% endif %}>{{ c.html }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
{% if plots %}<h2>Plots</h2><div class="plots">{% for name, uri in plots %}<figure><img src="{{ uri }}" alt="{{ name }}"><figcaption>{{ name }}</figcaption></figure>{% endfor %}</div>{% endif %}
{% if segments %}<h2>User segments</h2>{% for run, fragment in segments %}<p class="meta"><code>{{ run }}</code> (<code>recforge-segment</code>)</p>{{ fragment }}{% endfor %}{% endif %}
{% if failed %}<h2>Failed runs ({{ failed|length }})</h2><table class="failed"><thead><tr><th>run</th><th>error</th></tr></thead><tbody>
{% for run, error in failed %}<tr><td><code>{{ run }}</code></td><td>{{ error }}</td></tr>{% endfor %}</tbody></table>{% endif %}
<h2>Runs</h2><details><summary>{{ all_runs|length }} run directories</summary><table><thead><tr><th>run</th><th>status</th><th>row</th><th>seed</th></tr></thead><tbody>
{% for run, status, label, seed in all_runs %}<tr><td><code>{{ run }}</code></td><td>{{ status }}</td><td>{{ label }}</td><td>{{ seed }}</td></tr>
{% endfor %}</tbody></table></details>
<script>
(function () {
  var table = document.getElementById("results"), body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function value(td) { var v = td.getAttribute("data-value"), x = Number(v); return v === "" ? null : (isNaN(x) ? v : x); }
  function sortBy(col, desc) {
    if (!(col >= 0 && col < heads.length)) return;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[col]), y = value(b.cells[col]);
      if (x === null || y === null) return (x === null) - (y === null);  // missing values last
      var c = (typeof x === "number" && typeof y === "number") ? x - y
        : String(x).localeCompare(String(y), undefined, {numeric: true});
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    heads.forEach(function (th, i) {
      th.setAttribute("aria-sort", i === col ? (desc ? "descending" : "ascending") : "none");
    });
  }
  function fromHash() {
    var q = new URLSearchParams(location.hash.slice(1));
    if (q.has("sort")) sortBy(parseInt(q.get("sort"), 10), q.get("desc") === "1");
  }
  heads.forEach(function (th, i) {
    th.addEventListener("click", function () {
      var s = th.getAttribute("aria-sort");
      var desc = s === "none" ? th.getAttribute("data-numeric") === "1" : s === "ascending";
      history.replaceState(null, "", "#sort=" + i + (desc ? "&desc=1" : ""));
      sortBy(i, desc);
    });
  });
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
</script>
</body></html>
""", autoescape=True)


def _html_cell(cell: pd.Series | None) -> dict[str, Any]:
    if cell is None or cell["n"] == 0:
        return {"value": "", "html": "–", "cls": "num"}
    text = cell_text(cell, lambda s: f"\x00{s}\x01")
    html = str(escape(text)).replace("\x00", "<b>").replace("\x01", "</b>")
    p = cell["p"]
    tested = f"p = {p:.4g}, {cell['n_paired']} paired seeds" if not math.isnan(p) else "p: n/a"
    title = "baseline" if cell["baseline"] else tested
    return {"value": repr(float(cell["mean"])) if not math.isnan(cell["mean"]) else "", "html": Markup(html),
            "cls": "num best" if cell["best"] else "num", "title": title}


def _run_list(runs: pd.DataFrame, table: Table) -> list[tuple[str, str, str, str]]:
    """(run, status, row label, seed) for every collected run."""
    keys = [*table.rows, *table.cols]
    seeds = runs["seed"] if "seed" in runs else pd.Series("", index=runs.index)
    return [(r["run"], r["status"], group_label(keys, [r[k] for k in keys]), format_value("seed", s))
            for (_, r), s in zip(runs.iterrows(), seeds)]


def html(table: Table, runs: pd.DataFrame, sources: list[str], plots: dict[str, bytes] | None = None,
         generated: datetime | None = None, segments: list[tuple[str, str]] | None = None) -> str:
    """The whole report as one page: sortable results table, notes, embedded PNG plots, failed runs, and the
    (run, HTML fragment) of every run with a user-segments page (recforge-segment), inserted as written."""
    lay = layout(table)
    rows = [[{"value": "" if k == "–" else k, "html": k} for k in keys] + [_html_cell(c) for c in cells]
            for keys, cells in zip(lay.keys, lay.cells)]
    failed = runs[runs["status"] == "failed"]
    uris = [(name, "data:image/png;base64," + base64.b64encode(data).decode()) for name, data in (plots or {}).items()]
    return HTML.render(
        header=lay.header, n_keys=len(table.rows), rows=rows, notes=notes(table), protocol=table.protocol, plots=uris,
        failed=list(zip(failed["run"], failed["error"])), all_runs=_run_list(runs, table), sources=sources,
        segments=[(run, Markup(fragment)) for run, fragment in segments or []],
        n_ok=int((runs["status"] == "ok").sum()),
        n_failed=len(failed), generated=(generated or datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M:%S %Z"))
