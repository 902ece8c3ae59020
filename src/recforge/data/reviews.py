"""Data for text tasks: one sample per review, its text and one label column (intent or value).

Split: :class:`~recforge.data.ratings.RandomHoldout` over the rows kept by the reader (default: seed 0, a random
20 % is the test set; a fixed random 10 % of the remaining 80 % validates, for early stopping and the choice of
the tested checkpoint; the model trains on the other 72 %). ``experiments/clothing_tfidf.py`` reads the same
split from this module.

Batches are dicts of tensors: ``index`` (row of the table), ``label`` and, once a tokenizer is attached (models
that run the text encoder), ``input_ids`` / ``attention_mask`` padded to the longest text of the batch.
Texts are tokenized once, on first use, truncated to ``max_tokens``; training batches are drawn from length
buckets (:class:`~recforge.data.datamodule.LengthBucketBatchSampler`) and evaluation batches run longest first,
so little padding is computed. Without a tokenizer (a frozen encoder whose embeddings are precomputed) batches
carry only ``index`` and ``label``.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from recforge.data.datamodule import LOADER_RULES, LengthBucketBatchSampler, _identity
from recforge.data.ratings import (
    LabelledDataModule,
    RandomHoldout,
    SampleSplit,
    split_stats,
)
from recforge.errors import RecforgeError
from recforge.rules import BOOLEAN, check_arguments, rule_table

log = logging.getLogger(__name__)


class ReviewReader(Protocol):
    def read(self) -> pd.DataFrame: ...  # columns text, <label columns>


class Tokens:
    """Token ids of N texts as CSR: ``ids`` (sum of lengths,), ``offsets`` (N + 1,); ``pad_id`` pads batches."""

    def __init__(self, ids: list[list[int]], pad_id: int) -> None:
        self.lengths = torch.as_tensor([len(row) for row in ids], dtype=torch.long)  # (N,)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self.lengths, 0)])  # (N+1,)
        self.ids = torch.as_tensor([t for row in ids for t in row], dtype=torch.long)
        self.pad_id = pad_id

    def batch(self, rows: Tensor) -> dict[str, Tensor]:
        """input_ids and attention_mask (B, T) of ``rows``, padded on the right to the longest of them."""
        lengths = self.lengths[rows]  # (B,)
        width = int(lengths.max())
        positions = torch.arange(width)[None, :]  # (1, T)
        mask = positions < lengths[:, None]  # (B, T)
        flat = (self.offsets[rows][:, None] + positions).clamp(max=max(len(self.ids) - 1, 0))  # (B, T)
        input_ids = torch.where(mask, self.ids[flat], self.pad_id)  # (B, T)
        return {"input_ids": input_ids, "attention_mask": mask.long()}


def tokenize_texts(tokenizer: Any, texts: list[str], max_tokens: int) -> tuple[list[list[int]], int]:
    """Token ids of every text (special tokens included) truncated to ``max_tokens``, and how many texts were
    longer than that before truncation."""
    full = tokenizer(texts, truncation=False, add_special_tokens=True, verbose=False)["input_ids"]
    long = [i for i, ids in enumerate(full) if len(ids) > max_tokens]
    if long:
        cut = tokenizer([texts[i] for i in long], truncation=True, max_length=max_tokens)["input_ids"]
        for i, ids in zip(long, cut):
            full[i] = ids
    return full, len(long)


class ReviewSamples(Dataset):
    """Samples ``rows`` of the table with their labels; ``tokens`` (all N texts) adds the token ids."""

    def __init__(self, rows: Tensor, labels: Tensor, tokens: Tokens | None) -> None:
        self.rows, self.labels, self.tokens = rows, labels, tokens  # (S,), (S,)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitems__(self, index: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = self.rows[idx]  # (B,)
        batch = {"index": rows, "label": self.labels[idx]}
        return batch if self.tokens is None else {**batch, **self.tokens.batch(rows)}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])


class ReviewDataModule(LabelledDataModule):
    """Review texts with the label ``label_column`` (e.g. ``Rating`` for value, ``Recommended IND`` for intent)."""

    sample_kind = "reviews"  # what it makes; its task declares the same (checked by recforge.run.validate)
    argument_rules = rule_table(**LOADER_RULES, bucket_by_length=BOOLEAN)  # recforge.rules: checked in the config and here

    def __init__(self, name: str, reader: ReviewReader, label_column: str, split: RandomHoldout | None = None,
                 batch_size: int = 32, eval_batch_size: int = 128, max_tokens: int = 128,
                 bucket_by_length: bool = True, num_workers: int = 0, root: str | None = None) -> None:
        super().__init__()
        check_arguments(ReviewDataModule, "dataset", batch_size=batch_size, eval_batch_size=eval_batch_size,
                        bucket_by_length=bucket_by_length, num_workers=num_workers)
        if max_tokens < 2:
            raise RecforgeError(f"dataset.max_tokens={max_tokens} must be >= 2 (the special tokens alone take 2).")
        self.name, self.reader, self.label_column = name, reader, label_column
        self.split_fn = split if split is not None else RandomHoldout(test_fraction=0.2, val_fraction=0.1, seed=0)
        self.batch_size, self.eval_batch_size, self.max_tokens = batch_size, eval_batch_size, max_tokens
        self.bucket_by_length, self.num_workers, self.root = bucket_by_length, num_workers, root
        self.texts: list[str] = []
        self.labels = torch.empty(0)
        self.split: SampleSplit | None = None
        self.stats: dict[str, Any] = {}
        self.tokenizer: Any = None
        self._tokens: Tokens | None = None

    def prepare(self) -> None:
        """Read the reviews and split them (once)."""
        if self.split is not None:
            return
        df = self.reader.read()
        if self.label_column not in df.columns:
            raise RecforgeError(f"dataset.label_column={self.label_column!r} is not a label column of dataset "
                                f"'{self.name}' (it has {', '.join(c for c in df.columns if c not in ('row', 'text'))}).")
        self.texts = df["text"].tolist()
        self.labels = torch.as_tensor(df[self.label_column].to_numpy(np.float32))  # (N,)
        self.split = self.split_fn(len(self.texts))
        train = self.labels[torch.as_tensor(self.split.train)]
        self.stats = {"texts": len(self.texts), "label_column": self.label_column,
                      **split_stats(self.split, float(train.double().mean()))}
        log.info("dataset %s: %s", self.name, self.stats)

    def use_tokenizer(self, tokenizer: Any) -> None:
        """Batches carry token ids from now on (a Hugging Face tokenizer; texts are tokenized on first use)."""
        self.tokenizer, self._tokens = tokenizer, None

    @property
    def tokens(self) -> Tokens | None:
        """Token ids of every text (None without a tokenizer); counts truncated texts in ``stats``."""
        if self.tokenizer is None:
            return None
        if self._tokens is None:
            self.prepare()
            ids, truncated = tokenize_texts(self.tokenizer, self.texts, self.max_tokens)
            self._tokens = Tokens(ids, int(self.tokenizer.pad_token_id or 0))
            lengths = self._tokens.lengths.double()
            self.stats.update({"max_tokens": self.max_tokens, "truncated_texts": truncated,
                               "mean_tokens": round(float(lengths.mean()), 2),
                               "median_tokens": float(lengths.median())})
            log.info("dataset %s: %d of %d texts are longer than %d tokens and were truncated", self.name,
                     truncated, len(self.texts), self.max_tokens)
        return self._tokens

    def part(self, name: str) -> ReviewSamples:
        """The samples of ``train``, ``val`` or ``test``."""
        self.prepare()
        assert self.split is not None
        rows = torch.as_tensor(getattr(self.split, name), dtype=torch.long)
        return ReviewSamples(rows, self.labels[rows], self.tokens)

    def train_dataloader(self) -> DataLoader:
        samples = self.part("train")
        if self.tokens is None or not self.bucket_by_length:
            return DataLoader(samples, batch_size=self.batch_size, shuffle=True, collate_fn=_identity,
                              num_workers=self.num_workers)
        lengths = self.tokens.lengths[samples.rows]  # (S,)
        sampler = LengthBucketBatchSampler(RandomSampler(samples), self.batch_size, False, lengths)
        return DataLoader(samples, batch_sampler=sampler, collate_fn=_identity, num_workers=self.num_workers)

    def _eval_loader(self, name: str) -> DataLoader:
        samples = self.part(name)
        if self.tokens is not None:  # longest first: batches of similar length; outputs are keyed by index
            order = torch.argsort(self.tokens.lengths[samples.rows], descending=True, stable=True)
            samples = ReviewSamples(samples.rows[order], samples.labels[order], samples.tokens)
        return DataLoader(samples, batch_size=self.eval_batch_size, shuffle=False, collate_fn=_identity,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
