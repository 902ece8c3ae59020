"""The user-segments page: a Markdown table (segments.md), the same as an HTML fragment with the PCA picture
inlined (segments.html, which ``recforge-report --html`` includes), the picture (PNG) and segments.csv."""
from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
import numpy as np
from markupsafe import Markup, escape
from matplotlib import colormaps
from matplotlib.figure import Figure

from recforge.analysis.segments import Profile
from recforge.report.plots import to_png
from recforge.report.render import markdown_table


@dataclass(frozen=True)
class Page:
    """What the page says: a title, one line per setting (k choice, seed, protocol), the profiles (segments then
    all users), a display name per internal item id and what the item labels are ("genres", "attributes")."""

    title: str
    settings: list[str]
    profiles: list[Profile]
    item_names: Sequence[str]
    label_kind: str | None
    metric_k: int = 10


def number(x: float) -> str:
    """.1234 (the results pages' style); '–' for NaN."""
    return "–" if np.isnan(x) else f"{x:.4f}".replace("0.", ".", 1)


def percent(x: float) -> str:
    return f"{100 * x:.0f} %" if x >= 0.01 or x == 0 else f"{100 * x:.1f} %"


def header(page: Page) -> list[str]:
    k = page.metric_k
    labels = [f"most frequent {page.label_kind} (share of interactions, lift)"] if page.label_kind else []
    return ["segment", "users", f"test NDCG@{k}", f"test HR@{k}", "most frequent items (share of users)", *labels]


def rows(page: Page) -> list[list[str]]:
    """One row of cells per profile."""
    out = []
    for p in page.profiles:
        items = "; ".join(f"{page.item_names[i]} {percent(s)}" for i, s in p.items)
        shown = "; ".join(f"{name} {percent(s)} ×{lift:.2f}" for name, s, lift in p.labels)
        labels = [shown] if page.label_kind else []
        name = "all" if p.segment is None else str(p.segment)
        out.append([name, f"{p.users:,} ({percent(p.share)})", number(p.ndcg), number(p.hr), items, *labels])
    return out


def notes(page: Page) -> list[str]:
    k = page.metric_k
    lines = [f"NDCG@{k} and HR@{k}: means over the segment's users of their test target's rank, as the run ranks it.",
             "Items: the share of the segment's users whose history (every item before the test target) holds it."]
    if page.label_kind:
        lines.append(f"{page.label_kind.capitalize()}: the share of the segment's history interactions whose item "
                     f"has it, and that share over the share among all users (lift).")
    return lines


def markdown(page: Page) -> str:
    """segments.md: title, settings, the table and its notes."""
    settings = "\n".join(f"- {line}" for line in page.settings)
    body = markdown_table(header(page), rows(page), align="lrrrll")
    return f"## User segments: {page.title}\n\n{settings}\n\n{body}\n\n" + "\n".join(notes(page)) + "\n"


FRAGMENT = jinja2.Template("""<section class="segments">
<h3>{{ title }}</h3>
<ul class="meta">{% for s in settings %}<li>{{ s }}</li>{% endfor %}</ul>
<div class="scroll"><table class="segments"><thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
{% if png %}<figure><img src="data:image/png;base64,{{ png }}" alt="users by segment, PCA"><figcaption>{{ caption }}</figcaption></figure>{% endif %}
</section>
""", autoescape=True)


def inline_code(text: str) -> Markup:
    """Escaped text with Markdown's `code` spans as <code> elements."""
    return Markup(re.sub(r"`([^`]*)`", r"<code>\1</code>", str(escape(text))))


def html_fragment(page: Page, png: bytes | None, caption: str = "") -> str:
    """segments.html: the table as an HTML section (no page around it), the picture inlined as a data URI."""
    return FRAGMENT.render(title=page.title, settings=[inline_code(s) for s in page.settings], header=header(page),
                           rows=rows(page), notes=notes(page), caption=caption,
                           png=base64.b64encode(png).decode() if png is not None else None)


def colour(segment: int, k: int) -> str | tuple[float, ...]:
    """Matplotlib's ten default colours up to k = 10, tab20's twenty beyond (repeating after 20)."""
    return f"C{segment}" if k <= 10 else colormaps["tab20"](segment % 20)


def scatter_png(coords: np.ndarray, labels: np.ndarray, k: int, explained: np.ndarray) -> bytes:
    """The users on two principal components, one colour per segment. coords: (U, 2); labels: (U,)."""
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    size = 12 if len(labels) <= 2000 else 3
    for g in range(k):
        at = labels == g
        ax.scatter(coords[at, 0], coords[at, 1], s=size, alpha=0.6, color=colour(g, k), linewidths=0,
                   label=f"segment {g} ({int(at.sum()):,})")
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f} % of variance)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", markerscale=2 if size < 12 else 1, loc="upper left", bbox_to_anchor=(1.01, 1),
              frameon=False)
    return to_png(fig)


def segments_csv(user_ids: Sequence[object], labels: np.ndarray) -> str:
    """segments.csv: ``user,segment``, one line per user with the dataset's raw user id."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["user", "segment"])
    writer.writerows(zip(map(str, user_ids), labels.tolist()))
    return buf.getvalue()
