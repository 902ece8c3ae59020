"""Deploying a trained run: export the scoring path (TorchScript, ONNX, int8), top-K in batch, an HTTP server.

``model`` turns a run directory or checkpoint into a scorer and its item id map; ``recommender`` is the top-K
logic the batch command and the server share, so both give the same answer for the same history.
"""
