"""Shared by the text tests: the packaged MiniLM loaded once, and config overrides selecting a text encoder."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import recforge
from recforge.models.text_encoder import TextEncoder

TRAIN_YAML = Path(recforge.__file__).resolve().parent / "conf" / "train.yaml"


def text_encoder_override(option: str = "minilm") -> str:
    """``text_encoder=<option>``; appended (``+``) while train.yaml's defaults do not list the group yet."""
    defaults = OmegaConf.to_container(OmegaConf.load(TRAIN_YAML).defaults)
    listed = any(isinstance(entry, dict) and "text_encoder" in entry for entry in defaults)
    return f"{'' if listed else '+'}text_encoder={option}"


@pytest.fixture
def text_encoder_option():
    """The override selecting a text_encoder option: ``text_encoder_option("minilm_lora")``."""
    return text_encoder_override


@pytest.fixture(scope="session")
def minilm() -> TextEncoder:
    """The packaged all-MiniLM-L6-v2, frozen, loaded once per session."""
    encoder = TextEncoder()
    encoder.load()
    return encoder
