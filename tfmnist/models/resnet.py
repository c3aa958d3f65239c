"""A small pre-activation residual network for Fashion-MNIST (He et al. 2016)."""

import keras

from tfmnist.models import register
from tfmnist.models.layers import Dropout, batch_norm, linear_then_batch_norm

L = keras.layers


class Block(keras.layers.Layer):
  """Pre-activation basic block: BN-ReLU-Conv-BN-ReLU-Conv plus shortcut."""

  def __init__(self, filters, stride, **kwargs):
    super().__init__(**kwargs)
    self.bn1, self.bn2 = batch_norm(), batch_norm()
    self.conv1 = L.Conv2D(filters, 3, stride, padding="same", use_bias=False)
    self.conv2 = L.Conv2D(filters, 3, padding="same", use_bias=False)
    self.filters, self.stride = filters, stride
    self.project = None

  def build(self, input_shape):
    if self.stride != 1 or input_shape[-1] != self.filters:
      self.project = L.Conv2D(self.filters, 1, self.stride, use_bias=False)

  def call(self, x, training=False):
    y = keras.ops.relu(self.bn1(x, training=training))
    shortcut = self.project(y) if self.project is not None else x
    y = linear_then_batch_norm(self.conv1, self.bn2, y, training)
    y = self.conv2(keras.ops.relu(y))
    return y + shortcut


@register("resnet")
class ResNet(keras.Model):
  """Stem conv, three stages of residual blocks (28, 14, 7 pixels), pooling, dropout.

  Args:
    num_classes: outputs.
    widths: filters per stage.
    blocks_per_stage: residual blocks in each stage.
    dropout: before the classifier.
  """

  def __init__(self, num_classes, widths=(16, 32, 64), blocks_per_stage=2, dropout=0.2):
    super().__init__(name="resnet")
    self.stem = L.Conv2D(widths[0], 3, padding="same", use_bias=False)
    self.blocks = [Block(w, 2 if (s > 0 and b == 0) else 1)
                   for s, w in enumerate(widths) for b in range(blocks_per_stage)]
    for i, block in enumerate(self.blocks):  # Seen by tf.train.Checkpoint (see Sequence).
      setattr(self, f"block_{i}", block)
    self.bn = batch_norm()
    self.pool = L.GlobalAveragePooling2D()
    self.dropout = Dropout(dropout, salt=0)
    self.logits = L.Dense(num_classes, dtype="float32", name="logits")

  def call(self, images, training=False, noise=None):
    x = self.stem(images)
    for block in self.blocks:
      x = block(x, training=training)
    x = self.pool(keras.ops.relu(self.bn(x, training=training)))
    return self.logits(self.dropout(x, training=training, noise=noise))
