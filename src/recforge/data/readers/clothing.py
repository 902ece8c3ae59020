"""Women's E-Commerce Clothing Reviews (a CSV with Title, Review Text, Rating 1-5, Recommended IND 0/1, ...).

:class:`ClothingReviews` reads the file with pandas, keeps the rows whose review text is not empty (22,641 of
23,486), renders each row's text from a template over its title and review text, and keeps the label columns
as they are. A missing or unreadable file, a missing column or a non-numeric label is reported in one sentence
naming the file and the column.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recforge.errors import RecforgeError

TITLE, TEXT = "Title", "Review Text"
LABELS = ("Rating", "Recommended IND")


class ClothingReviews:
    """Reviews as a table: ``text`` (str) and every label column (float64), rows in file order (``row``: the
    0-based data row of the file). ``template`` renders titled rows, ``untitled_template`` rows without a title."""

    def __init__(self, path: str, template: str = "{title}. {text}", untitled_template: str = "{text}",
                 title_column: str = TITLE, text_column: str = TEXT,
                 label_columns: Sequence[str] = LABELS) -> None:
        self.path = Path(path).expanduser()
        self.template, self.untitled_template = template, untitled_template
        self.title_column, self.text_column = title_column, text_column
        self.label_columns = tuple(label_columns)
        for name, value in (("template", template), ("untitled_template", untitled_template)):
            try:
                value.format(title="", text="")
            except (KeyError, IndexError, ValueError) as exc:
                raise RecforgeError(f"dataset.reader.{name}={value!r} is not a template over {{title}} and {{text}} "
                                    f"({type(exc).__name__}: {exc}).") from None

    def source_files(self) -> list[Path]:
        return [self.path]

    def _raw(self) -> pd.DataFrame:
        if not self.path.is_file():
            raise RecforgeError(f"clothing reviews file {self.path} does not exist; expected the Women's "
                                "E-Commerce Clothing Reviews CSV (set dataset.root).")
        try:
            df = pd.read_csv(self.path, dtype={self.title_column: "string", self.text_column: "string"})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            cause = " ".join(str(exc).split())[:160]
            raise RecforgeError(f"clothing reviews file {self.path} is not a readable CSV ({cause}).") from None
        wanted = [self.title_column, self.text_column, *self.label_columns]
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise RecforgeError(f"clothing reviews file {self.path} has no column {missing[0]!r} "
                                f"(its columns are {', '.join(map(str, df.columns))}).")
        return df

    def read(self) -> pd.DataFrame:
        """Rows with a non-empty review text: ``row``, ``text`` and the label columns (float64)."""
        df = self._raw()
        text = df[self.text_column].fillna("").str.strip()
        keep = (text != "").to_numpy()
        title = df[self.title_column].fillna("").str.strip()[keep]
        text = text[keep]
        out = pd.DataFrame({"row": np.flatnonzero(keep), "text": self.render(title.tolist(), text.tolist())})
        for column in self.label_columns:
            values = pd.to_numeric(df[column][keep], errors="coerce")
            bad = values.isna().to_numpy()
            if bad.any():
                first = int(np.flatnonzero(keep)[np.flatnonzero(bad)[0]])
                raise RecforgeError(f"clothing reviews file {self.path}: column {column!r} holds "
                                    f"{df[column].iloc[first]!r} at data row {first + 1}, expected a number.")
            out[column] = values.to_numpy(np.float64)
        return out

    def render(self, titles: Sequence[str], texts: Sequence[str]) -> list[str]:
        """One text per row: ``template`` when the title is non-empty, else ``untitled_template``."""
        return [(self.template if title else self.untitled_template).format(title=title, text=text)
                for title, text in zip(titles, texts)]
