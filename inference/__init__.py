"""Trained networks at work: predictions for new images (`predict`), and export to ONNX
(`onnx_export`)."""
if __name__ != "xpnn.inference":  # `import inference` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.inference")
from xpnn.inference.images import ImageError, InputImage, prepare, read_images
from xpnn.inference.predict import Prediction, class_probabilities, predict

__all__ = ["ImageError", "InputImage", "Prediction", "class_probabilities", "predict", "prepare",
           "read_images"]
