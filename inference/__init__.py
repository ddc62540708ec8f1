"""Trained networks at work: predictions for new images, and export to ONNX.

    from xpnn.training.runs import load_trained
    from xpnn.inference import predict
    trained = load_trained("runs/resnet-20261127-120000")
    for prediction in predict(trained, ["digit.png", "photos/"]):
        print(prediction.name, prediction.top(3))      # [(class, probability)] * 3
"""
if __name__ != "xpnn.inference":  # `import inference` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.inference")
from xpnn.inference.images import ImageError, InputImage, prepare, read_images
from xpnn.inference.predict import Prediction, class_probabilities, predict

__all__ = ["ImageError", "InputImage", "Prediction", "class_probabilities", "predict", "prepare",
           "read_images"]
