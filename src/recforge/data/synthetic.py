"""Deterministic synthetic behaviour data: the embedded default dataset (no files, no network).

Items belong to categories and have Zipf-skewed popularity. Each item has two successor items in its
category; a user's next item follows a successor of the current one with probability ``follow_prob``, and is
otherwise drawn by popularity. A sequence model can learn the transitions; a popularity ranking cannot, so a
trained SASRec beats the Popularity baseline clearly. Items carry a title, category and description for text
models.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from recforge.rules import (
    ABSENT,
    UNIT_CLOSED,
    Arguments,
    check_arguments,
    int_at_least,
    number_at_least,
    rule_table,
)

CATEGORIES = ["books", "music", "films", "games", "garden", "kitchen", "sports", "toys", "beauty", "travel"]
ADJECTIVES = ["red", "quiet", "bright", "classic", "modern", "tiny", "grand", "wild", "gentle", "swift", "golden", "dark"]
NOUNS = {
    "books": "novel", "music": "album", "films": "movie", "games": "board game", "garden": "planter",
    "kitchen": "pan", "sports": "racket", "toys": "puzzle", "beauty": "lotion", "travel": "backpack",
}


def lengths_ordered(args: Arguments) -> str | None:
    """The shortest generated sequence is not longer than the longest."""
    low, high = args["min_length"], args["max_length"]
    if low is ABSENT or high is ABSENT or low <= high:
        return None
    return f"{args.key('min_length')}={low} must be <= {args.key('max_length')}={high}"


class SyntheticSequences:
    """Reader-compatible generator: ``read()`` gives interactions, ``item_text()`` the item texts."""

    has_timestamps = True  # every user's t-th interaction is t hours after a common start

    # recforge.rules: checked in the config and here
    argument_rules = rule_table(
        num_users=int_at_least(1), num_items=int_at_least(1), min_length=int_at_least(1), max_length=int_at_least(1),
        follow_prob=UNIT_CLOSED, zipf_exponent=number_at_least(0), seed=int_at_least(0),
    )
    argument_checks = (lengths_ordered,)

    def __init__(
        self,
        num_users: int = 1000,
        num_items: int = 400,
        min_length: int = 10,
        max_length: int = 60,
        follow_prob: float = 0.7,
        zipf_exponent: float = 1.1,
        seed: int = 0,
    ) -> None:
        check_arguments(SyntheticSequences, "dataset.reader", num_users=num_users, num_items=num_items,
                        min_length=min_length, max_length=max_length, follow_prob=follow_prob,
                        zipf_exponent=zipf_exponent, seed=seed)
        self.num_users, self.num_items = num_users, num_items
        self.min_length, self.max_length = min_length, max_length
        self.follow_prob, self.zipf_exponent, self.seed = follow_prob, zipf_exponent, seed

    def _structure(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item categories (I,), popularity probabilities (I,), and two successors per item (I, 2)."""
        n_cat = len(CATEGORIES)
        category = rng.integers(0, n_cat, self.num_items)  # (I,)
        popularity = 1.0 / np.arange(1, self.num_items + 1) ** self.zipf_exponent
        popularity = popularity[rng.permutation(self.num_items)]
        popularity /= popularity.sum()
        successors = np.empty((self.num_items, 2), dtype=np.int64)
        for c in range(n_cat):
            members = np.nonzero(category == c)[0]
            pool = members if members.size > 1 else np.arange(self.num_items)
            successors[members] = rng.choice(pool, size=(members.size, 2))
        return category, popularity, successors

    def read(self) -> pd.DataFrame:
        """Interactions with columns user, item (raw ids as strings), timestamp, rating (NaN)."""
        users, items, times = self.interactions()
        return pd.DataFrame({
            "user": _decimal_strings(users, self.num_users), "item": _decimal_strings(items, self.num_items),
            "timestamp": 1_600_000_000 + 3600 * times, "rating": np.nan,
        })

    def interactions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """User (n,), item (n,) and step (n,) of every interaction, user by user in time order (int64).

        Vectorised over users: one random draw per step for all users at once (memory O(U x T)).
        """
        rng = np.random.default_rng(self.seed)
        _, popularity, successors = self._structure(rng)
        lengths = rng.integers(self.min_length, self.max_length + 1, self.num_users)  # (U,)
        steps = int(lengths.max())
        seq = np.empty((steps, self.num_users), dtype=np.int64)  # (T, U): each step's row is contiguous
        seq[0] = rng.choice(self.num_items, self.num_users, p=popularity)
        for t in range(1, steps):
            follow = rng.random(self.num_users) < self.follow_prob
            nxt = successors[seq[t - 1], rng.integers(0, 2, self.num_users)]
            seq[t] = np.where(follow, nxt, rng.choice(self.num_items, self.num_users, p=popularity))
        seq = np.ascontiguousarray(seq.T)  # (U, T)
        valid = np.arange(steps)[None, :] < lengths[:, None]  # (U, T)
        users = np.repeat(np.arange(self.num_users), lengths)  # (n,)
        times = np.arange(len(users)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (n,) step in its sequence
        return users, seq[valid], times

    attribute_column = "category"  # item_embedder=attributes: the category of item_text()

    def item_text(self) -> pd.DataFrame:
        """One row per item: item, title, category, text."""
        rng = np.random.default_rng(self.seed)
        category, _, _ = self._structure(rng)
        adjectives = np.asarray(ADJECTIVES)[np.arange(self.num_items) % len(ADJECTIVES)]
        cats = np.asarray(CATEGORIES)[category]
        titles = [f"{a} {NOUNS[c]} no. {i}" for i, (a, c) in enumerate(zip(adjectives, cats))]
        text = [f"{t}. Category: {c}." for t, c in zip(titles, cats)]
        return pd.DataFrame({"item": np.arange(self.num_items).astype(str), "title": titles, "category": cats, "text": text})

    def source_files(self) -> list:
        return []


def _decimal_strings(ids: np.ndarray, n: int) -> pd.Series:
    """Integer ids in [0, n) as decimal strings (pandas "str" dtype), spelling each distinct value only once."""
    names = pa.array(np.arange(n).astype(str))  # (n,) small: one string per user or item
    return pd.Series(names.take(pa.array(ids)), dtype="str")
