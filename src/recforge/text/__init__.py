"""Item texts and pretrained text encoders for text and hybrid item embedders.

- :mod:`recforge.text.items`: one text per internal item id, from a reader's ``item_text()`` and a template;
- :mod:`recforge.text.encoder`: :class:`~recforge.text.encoder.TextEncoder` (Hugging Face model, mean pooling,
  optional LoRA); the packaged all-MiniLM-L6-v2 is the offline default;
- :mod:`recforge.text.cache`: frozen item embeddings cached on disk, keyed by model and texts;
- :mod:`recforge.text.attach`: gives the item texts to every model part that uses them.

Nothing here imports transformers or peft until a model is loaded.
"""
