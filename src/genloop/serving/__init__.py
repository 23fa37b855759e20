"""``genloop serve``: the exported ONNX generators over the Open Inference Protocol (KServe V2) REST API."""
from genloop.serving.settings import ServeSettings, ServingError, default_model_paths

__all__ = ["ServeSettings", "ServingError", "create_app", "default_model_paths"]


def create_app(settings: ServeSettings, holder=None, source=None):
    """The FastAPI app (imported lazily: fastapi and onnxruntime load only when a server is built)."""
    from genloop.serving.app import create_app as build

    return build(settings, holder, source)
