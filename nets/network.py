"""A network: a stack of layers and the loss layer that trains it."""
import math

from xpnn.layers import Layer, SequentialLayer, SoftmaxCrossEntropyLossLayer
from xpnn.nets.summary import layer_rows


class Network(Layer):
    """`layers` maps images to logits; `loss_layer` turns logits and labels into a loss.

    Shapes: forward (N, *input_shape) -> logits (N, num_classes). Printed as its `name`
    followed by ``(layers): SequentialLayer:`` ... and ``(loss_layer): ...``.
    """

    def __init__(self, name, layers, loss_layer=None, input_shape=None):
        self.name = name
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.loss_pending = False  # True from forward_loss until the backward that uses it
        self.layers = layers if isinstance(layers, SequentialLayer) else SequentialLayer(layers)
        self.loss_layer = loss_layer if loss_layer is not None else SoftmaxCrossEntropyLossLayer()
        if len(self.layers):
            self.layers[0].input_grad_needed = False  # nothing needs d loss / d image

    def title(self):
        return self.name

    def output_shape(self, input_shape):
        return self.layers.output_shape(input_shape)

    def stored_values_per_image(self):
        """Values the top-level layers output for one image: a lower bound of what a training
        step keeps between forward and backward, per image."""
        return sum(math.prod(row.output_shape) for row in layer_rows(self))

    def forward(self, x):
        """Logits for a batch of float images (no loss: `backward` needs `forward_loss`)."""
        if x.dtype.kind != "f":  # integer images (0-255) would be taken as very bright ones
            raise ValueError(f"{self.name} takes floating-point images (float32 on the [0, 1] "
                             f"scale, as it was trained), got {x.dtype}; divide 0-255 images by "
                             f"255 (xpnn.training.evaluate takes uint8 images as they are)")
        self.loss_pending = False
        return self.layers.forward(x)

    def forward_loss(self, x, labels):
        """Forward through the layers and the loss; returns (mean loss as a 0-d array, logits)."""
        logits = self.forward(x)
        loss = self.loss_layer.forward(logits, labels)
        self.loss_pending = True
        return loss, logits

    def backward(self, grad_out=1.0):
        """Backward from the loss of the last `forward_loss` through every layer; `RuntimeError`
        when no `forward_loss` came since the last `backward` or a plain `forward` came after it."""
        if not self.loss_pending:
            raise RuntimeError(f"{self.name}.backward() follows forward_loss(images, labels); call "
                               f"forward_loss (not forward) before each backward")
        self.loss_pending = False
        return self.layers.backward(self.loss_layer.backward(grad_out))
