"""M3, M5 and M7 of An et al. 2020, "An ensemble of simple convolutional
neural network models for MNIST digit recognition" (arXiv:2008.10400).

Stacks of unpadded convolutions (no pooling), each followed by BatchNorm and
ReLU, then a dense layer and BatchNorm over the flattened features. The
kernel size sets the depth: 3x3 takes 10 layers to shrink 28 to 8, 5x5 takes
5 layers (28 to 8), 7x7 takes 4 layers (28 to 4).
"""

import keras

from tfmnist.models import register
from tfmnist.models.convnets import Sequence
from tfmnist.models.layers import batch_norm, conv_bn_relu

L = keras.layers


def _layers(kernel_size, filters, num_classes):
  layers = []
  for f in filters:
    layers += conv_bn_relu(f, kernel_size)
  layers += [L.Flatten(), L.Dense(num_classes, use_bias=False),
             batch_norm(dtype="float32")]
  return layers


@register("m3")
class M3(Sequence):
  """3x3 kernels, 10 conv layers of 32..176 filters (step 16)."""

  def __init__(self, num_classes):
    super().__init__(_layers(3, range(32, 177, 16), num_classes), name="m3")


@register("m5")
class M5(Sequence):
  """5x5 kernels, 5 conv layers of 32..160 filters (step 32)."""

  def __init__(self, num_classes):
    super().__init__(_layers(5, range(32, 161, 32), num_classes), name="m5")


@register("m7")
class M7(Sequence):
  """7x7 kernels, 4 conv layers of 48..192 filters (step 48)."""

  def __init__(self, num_classes):
    super().__init__(_layers(7, range(48, 193, 48), num_classes), name="m7")
