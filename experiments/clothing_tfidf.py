"""TF-IDF baseline for the clothing-review text tasks, on exactly the split of ``dataset=clothing-reviews``.

Intent ("Recommended IND"): TF-IDF over word 1-2-grams + logistic regression; value ("Rating"): the same features
+ ridge regression. The split comes from the dataset config itself (``ReviewDataModule``: seed 0, 20 % test,
10 % of the rest validation), so the fine-tuned models and this baseline are scored on the same 4,528 reviews
with the same metric functions (``recforge.evaluation.pointwise``; predicted ratings clipped to [1, 5]).

Two settings are reported for each task:

- ``default``: scikit-learn's defaults (C=1, alpha=1) fitted on the whole 80 % training part (train + validation),
  as the issue's baseline was measured;
- ``tuned``: C / alpha chosen on the validation part (fitted on the 72 % training rows), then refitted on the
  80 % with the chosen value.

Usage: python experiments/clothing_tfidf.py [--data-root ../shared/data] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge

from recforge.data.reviews import ReviewDataModule
from recforge.evaluation.pointwise import intent_metrics, value_metrics

C_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
ALPHA_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)


def load_split(data_root: str, label_column: str) -> ReviewDataModule:
    """The datamodule of ``experiment=clothing_intent`` (same reader and split), with ``label_column``."""
    with initialize_config_module("recforge.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=clothing_intent", f"dataset.root={data_root}",
                                          f"dataset.label_column={label_column}"])
    dm: ReviewDataModule = instantiate(cfg.dataset)
    dm.setup()
    return dm


VECTORIZER = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}


def features(texts: list[str], train: np.ndarray, *others: np.ndarray):
    """TF-IDF (``VECTORIZER``: word 1-2-grams, sublinear tf, terms in >= 2 training texts) fitted on ``train``
    rows only."""
    vectorizer = TfidfVectorizer(**VECTORIZER)
    fitted = vectorizer.fit_transform([texts[i] for i in train])
    return (fitted, *(vectorizer.transform([texts[i] for i in rows]) for rows in others))


def intent_scores(model: LogisticRegression, x, y: np.ndarray) -> dict[str, float]:
    probs = torch.as_tensor(model.predict_proba(x)[:, 1])
    return intent_metrics(probs, torch.as_tensor(y))


def value_scores(model: Ridge, x, y: np.ndarray) -> dict[str, float]:
    return value_metrics(torch.as_tensor(model.predict(x)).clamp(1, 5), torch.as_tensor(y))


def run_task(dm: ReviewDataModule, intent: bool) -> dict[str, dict]:
    split, labels, texts = dm.split, dm.labels.numpy().astype(np.float64), dm.texts
    assert split is not None
    full = np.sort(np.concatenate([split.train, split.val]))
    make = (lambda v: LogisticRegression(C=v, max_iter=2000)) if intent else (lambda v: Ridge(alpha=v))
    score = intent_scores if intent else value_scores
    y = labels.astype(int) if intent else labels
    out: dict[str, dict] = {}
    started = time.perf_counter()
    x_full, x_test = features(texts, full, split.test)
    default = 1.0
    out["default"] = {"param": default, **score(make(default).fit(x_full, y[full]), x_test, y[split.test])}
    # choose C / alpha on the validation part (vectorizer and model fitted on the 72 % training rows only)
    x_train, x_val = features(texts, split.train, split.val)
    key = "auc" if intent else "rmse"
    val = {v: score(make(v).fit(x_train, y[split.train]), x_val, y[split.val])[key] for v in
           (C_GRID if intent else ALPHA_GRID)}
    best = (max if intent else min)(val, key=val.get)
    out["tuned"] = {"param": best, "val": val, **score(make(best).fit(x_full, y[full]), x_test, y[split.test])}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--plain-tfidf", action="store_true",
                        help="scikit-learn's TfidfVectorizer defaults (min_df=1, raw tf) with 1-2-grams")
    args = parser.parse_args()
    if args.plain_tfidf:
        VECTORIZER.update(min_df=1, sublinear_tf=False)
    results = {}
    for task, column, intent in (("intent", "Recommended IND", True), ("value", "Rating", False)):
        dm = load_split(str(Path(args.data_root).resolve()), column)
        results[task] = run_task(dm, intent)
        results[task]["samples"] = {k: dm.stats[f"{k}_samples"] for k in ("train", "val", "test")}
        for setting in ("default", "tuned"):
            r = results[task][setting]
            shown = ("auc", "f1", "logloss", "accuracy") if intent else ("mae", "rmse", "mse")
            param = "C" if intent else "alpha"
            print(f"{task:6s} {setting:7s} {param}={r['param']:<5g} " + "  ".join(f"{m} {r[m]:.4f}" for m in shown))
        print(f"{task:6s} validation {results[task]['tuned']['val']}  ({results[task]['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
