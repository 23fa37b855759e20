"""Adapters to the world outside Python: files, DVC, MLflow, Great Expectations, ONNX, image sources, servers."""
