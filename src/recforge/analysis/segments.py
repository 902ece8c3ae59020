"""User segments: k-means over the users' final encoder states (the state that predicts their test target), k
chosen by silhouette when not given, a 2-D PCA view, and what each segment is made of: size, test NDCG@10 and
HR@10, the items and item labels (genres, attributes) most frequent in its users' histories.

Pure functions of arrays; :mod:`recforge.segment` computes the states and ranks from a run and writes the page.
k-means: Lloyd (1982) via scikit-learn's ``KMeans`` (k-means++ starts); silhouette: Rousseeuw (1987).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score


def renumber_by_size(labels: np.ndarray, k: int) -> np.ndarray:
    """The same partition numbered by size: 0 is the largest segment, equal sizes by their first user row.
    labels: (U,) in 0..k-1 -> (U,) int64."""
    sizes = np.bincount(labels, minlength=k)  # (k,)
    first = np.full(k, len(labels))
    np.minimum.at(first, labels, np.arange(len(labels)))  # (k,) first row of each label (U if empty)
    order = np.lexsort((first, -sizes))  # old labels, largest first
    new = np.empty(k, dtype=np.int64)
    new[order] = np.arange(k)
    return new[labels]


def cluster(states: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
    """Segment of every user, (U,) int64 in 0..k-1 numbered by size (:func:`renumber_by_size`), by k-means on
    states (U, H) with ``n_init`` k-means++ starts drawn from ``random_state=seed``: same states and seed, same
    segments. Identical states may leave fewer than k segments non-empty (scikit-learn's warning is silenced)."""
    if not 1 <= k <= len(states):
        raise ValueError(f"k={k} must be between 1 and the number of users ({len(states)})")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)  # fewer distinct states than k
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(states)
    return renumber_by_size(labels, k)


@dataclass(frozen=True)
class KChoice:
    """The k with the best silhouette and the silhouette of every k tried (NaN: one segment only)."""

    k: int
    scores: dict[int, float]
    sample_size: int | None  # users the silhouette was computed on (None: all)


def silhouette(states: np.ndarray, labels: np.ndarray, seed: int, sample_size: int | None) -> float:
    """Mean silhouette of the segments over at most ``sample_size`` users drawn with ``seed`` (None: all users);
    NaN when the users fall in one segment."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    size = sample_size if sample_size is not None and sample_size < len(states) else None
    return float(silhouette_score(states, labels, sample_size=size, random_state=seed))


def choose_k(states: np.ndarray, ks: Sequence[int], seed: int, n_init: int = 10,
             sample_size: int | None = None) -> KChoice:
    """The k of ``ks`` (each in 2 .. U - 1) whose k-means segments have the highest silhouette; ties and NaN go to
    the smaller k. states: (U, H)."""
    if not ks or min(ks) < 2 or max(ks) > len(states) - 1:
        raise ValueError(f"ks={list(ks)} must be non-empty and within 2 .. {len(states) - 1} (users - 1)")
    scores = {k: silhouette(states, cluster(states, k, seed, n_init), seed, sample_size) for k in ks}
    best = max(ks, key=lambda k: (np.nan_to_num(scores[k], nan=-2.0), -k))
    used = sample_size if sample_size is not None and sample_size < len(states) else None
    return KChoice(k=best, scores=scores, sample_size=used)


def project(states: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The states on their first two principal components, (U, 2), and the variance ratio each explains (2,)."""
    pca = PCA(n_components=2, random_state=seed)
    return pca.fit_transform(states), pca.explained_variance_ratio_


def history_matrix(items: np.ndarray, indptr: np.ndarray, users: np.ndarray, positions: np.ndarray,
                   num_items: int) -> sparse.csr_matrix:
    """How often each item occurs in each sample's history (the user's items before ``positions``): a sparse
    (S, N+1) count matrix. items: (n,) CSR values, indptr: (U+1,), users and positions: (S,)."""
    lengths = np.asarray(positions, dtype=np.int64)  # (S,)
    starts = np.repeat(indptr[users] - (np.cumsum(lengths) - lengths), lengths)  # (total,)
    flat = starts + np.arange(int(lengths.sum()))  # (total,) positions in items
    rows = np.repeat(np.arange(len(users)), lengths)  # (total,)
    values = np.ones(len(flat), dtype=np.int64)
    return sparse.csr_matrix((values, (rows, items[flat])), shape=(len(users), num_items + 1))


def label_matrix(item_labels: Sequence[Sequence[str]]) -> tuple[sparse.csr_matrix, list[str]]:
    """Item x label indicator (N+1, L) from each internal item id's labels (entry 0, padding, has none), and the
    label names in order of first appearance."""
    names: dict[str, int] = {}
    rows, cols = [], []
    for item, labels in enumerate(item_labels):
        for label in dict.fromkeys(labels):
            rows.append(item)
            cols.append(names.setdefault(label, len(names)))
    values = np.ones(len(rows), dtype=np.int64)
    return sparse.csr_matrix((values, (rows, cols)), shape=(len(item_labels), len(names))), list(names)


def segment_sums(labels: np.ndarray, k: int, matrix: sparse.spmatrix) -> np.ndarray:
    """Row sums of ``matrix`` (S, C) per segment: (k, C) int64. labels: (S,) in 0..k-1."""
    member = sparse.csr_matrix((np.ones(len(labels), dtype=np.int64), (labels, np.arange(len(labels)))),
                               shape=(k, len(labels)))  # (k, S)
    return np.asarray((member @ matrix).todense(), dtype=np.int64)


def top_columns(counts: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` columns of ``counts`` (C,) with the highest positive counts, highest first, ties by lower column."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    return order[counts[order] > 0][:n]


@dataclass(frozen=True)
class Profile:
    """One segment, or all users together (``segment`` None)."""

    segment: int | None
    users: int
    share: float  # of all users
    ndcg: float  # mean test NDCG@k of its users (NaN: empty)
    hr: float  # mean test HR@k
    items: list[tuple[int, float]]  # (item id, share of its users whose history holds it), most frequent first
    labels: list[tuple[str, float, float]]  # (label, share of its history interactions, lift over all users)


def profiles(labels: np.ndarray, k: int, history: sparse.csr_matrix, ndcg: np.ndarray, hr: np.ndarray,
             item_labels: sparse.csr_matrix | None = None, label_names: Sequence[str] = (),
             top: int = 5) -> list[Profile]:
    """Profiles of segments 0..k-1, then of all users. labels, ndcg, hr: (S,) per user; history: (S, N+1) counts
    (:func:`history_matrix`); item_labels: (N+1, L) indicator (:func:`label_matrix`) or None."""
    present = history.copy()
    present.data[:] = 1
    holders = segment_sums(labels, k, present)  # (k, N+1) users whose history holds each item
    counts = segment_sums(labels, k, history)  # (k, N+1) interactions per item
    sizes = np.bincount(labels, minlength=k)  # (k,)
    per_label = np.zeros((k, 0)) if item_labels is None else np.asarray(item_labels.T @ counts.T).T  # (k, L)
    all_labels = per_label.sum(axis=0) / max(counts.sum(), 1)  # (L,) share of all interactions
    out = []
    for g in [*range(k), None]:
        rows = slice(None) if g is None else slice(g, g + 1)
        size = int(sizes[rows].sum())
        users = labels == g if g is not None else np.ones(len(labels), dtype=bool)  # (S,)
        label_share = per_label[rows].sum(axis=0) / max(counts[rows].sum(), 1)  # (L,)
        shown = top_columns(label_share, top)
        out.append(Profile(
            segment=g, users=size, share=size / max(len(labels), 1),
            ndcg=float(ndcg[users].mean()) if size else float("nan"),
            hr=float(hr[users].mean()) if size else float("nan"),
            items=[(int(i), holders[rows, i].sum() / size) for i in top_columns(holders[rows].sum(axis=0), top)],
            labels=[(label_names[j], float(label_share[j]), float(label_share[j] / all_labels[j])) for j in shown],
        ))
    return out
