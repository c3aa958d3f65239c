"""Sequential networks: an MLP, LeNet-5, the seed LeNet, the Kaggle CNN, a deep
BatchNorm net, and the small BatchNorm nets strided_bn, strided_bn_wide,
strided_bn_deskew, fast_cnn, fast_cnn_lite, fast_cnn16, fast_cnn4, fast_cnn4_lite
and fast_cnn4_16."""

import keras

from tfmnist.models import register
from tfmnist.models.layers import (Deskew, Dropout, batch_norm, conv_bn_relu,
                                   linear_then_batch_norm)

L = keras.layers


class Sequence(keras.Model):
  """A model that applies its layers in order, passing training/noise where used."""

  def __init__(self, layers, name=None):
    super().__init__(name=name)
    self.stack = layers
    # tf.train.Checkpoint does not look inside Keras's tracked lists: an
    # attribute per layer puts every variable in checkpoints, including the
    # BatchNorm moving statistics that the optimizer does not hold.
    for i, layer in enumerate(layers):
      setattr(self, f"layer_{i}", layer)

  def call(self, images, training=False, noise=None):
    x = images
    i = 0
    while i < len(self.stack):
      layer = self.stack[i]
      following = self.stack[i + 1] if i + 1 < len(self.stack) else None
      if isinstance(layer, (L.Conv2D, L.Dense)) and isinstance(following,
                                                              L.BatchNormalization):
        x = linear_then_batch_norm(layer, following, x, training)
        i += 1
      elif isinstance(layer, Dropout):
        x = layer(x, training=training, noise=noise)
      elif isinstance(layer, L.BatchNormalization):
        x = layer(x, training=training)
      else:
        x = layer(x)
      i += 1
    return x


def _logits(num_classes):
  # float32 logits keep the softmax and loss exact under mixed precision.
  return L.Dense(num_classes, dtype="float32", name="logits")


@register("mlp")
class MLP(Sequence):
  """Fully connected network: 784 -> hidden -> ... -> classes, ReLU, dropout."""

  def __init__(self, num_classes, hidden_units=(512, 512), dropout=0.2):
    layers = [L.Flatten()]
    for i, units in enumerate(hidden_units):
      layers += [L.Dense(units, activation="relu"), Dropout(dropout, salt=i)]
    super().__init__(layers + [_logits(num_classes)], name="mlp")


@register("lenet5")
class LeNet5(Sequence):
  """LeNet-5 (LeCun et al. 1998): C1-S2-C3-S4-C5-F6, tanh, average pooling.

  The 28x28 input is padded to the paper's 32x32 by C1's "same" padding;
  C3 is fully connected to S2 (the paper's sparse table is a detail of its
  time). 61,706 parameters.
  """

  def __init__(self, num_classes):
    super().__init__([
        L.Conv2D(6, 5, padding="same", activation="tanh"),   # C1: 28x28x6
        L.AveragePooling2D(2),                                # S2: 14x14x6
        L.Conv2D(16, 5, activation="tanh"),                   # C3: 10x10x16
        L.AveragePooling2D(2),                                # S4: 5x5x16
        L.Conv2D(120, 5, activation="tanh"),                  # C5: 1x1x120
        L.Flatten(),
        L.Dense(84, activation="tanh"),                       # F6
        _logits(num_classes),
    ], name="lenet5")


@register("lenet")
class LeNet(Sequence):
  """The seed notebook's network (Keras mnist_cnn example): 1,199,882 parameters.

  Conv 32 3x3, Conv 64 3x3, MaxPool 2, Dropout .25, Dense 128, Dropout .5.
  """

  def __init__(self, num_classes):
    super().__init__([
        L.Conv2D(32, 3, activation="relu"),
        L.Conv2D(64, 3, activation="relu"),
        L.MaxPooling2D(2),
        Dropout(0.25, salt=0),
        L.Flatten(),
        L.Dense(128, activation="relu"),
        Dropout(0.5, salt=1),
        _logits(num_classes),
    ], name="lenet")


@register("kaggle_cnn")
class KaggleCNN(Sequence):
  """The 99.7% Kaggle Digit Recognizer network: 887,530 parameters.

  [Conv 32 5x5 same] x2, MaxPool, Dropout .25, [Conv 64 3x3 same] x2,
  MaxPool 2 stride 2, Dropout .25, Dense 256, Dropout .5.
  """

  def __init__(self, num_classes):
    super().__init__([
        L.Conv2D(32, 5, padding="same", activation="relu"),
        L.Conv2D(32, 5, padding="same", activation="relu"),
        L.MaxPooling2D(2),
        Dropout(0.25, salt=0),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.MaxPooling2D(2, strides=2),
        Dropout(0.25, salt=1),
        L.Flatten(),
        L.Dense(256, activation="relu"),
        Dropout(0.5, salt=2),
        _logits(num_classes),
    ], name="kaggle_cnn")


@register("deep_cnn")
class DeepCNN(Sequence):
  """A 13-layer ConvNet with BatchNorm and LeakyReLU (the Kannada-MNIST report's).

  Three blocks of [Conv 3x3, BN, LeakyReLU(0.1)] x3 (64, 128, 256 filters),
  each followed by MaxPool and Dropout, then Dense 256 (BN, LeakyReLU),
  Dense 128 (BN, LeakyReLU), Dense classes: a stem conv, 9 block convs and
  3 dense layers make 13 weight layers.
  """

  def __init__(self, num_classes, dropout=0.3):
    layers = [L.Conv2D(32, 3, padding="same", use_bias=False), batch_norm(),
              L.LeakyReLU(0.1)]
    for block, filters in enumerate((64, 128, 256)):
      for _ in range(3):
        layers += [L.Conv2D(filters, 3, padding="same", use_bias=False), batch_norm(),
                   L.LeakyReLU(0.1)]
      layers += [L.MaxPooling2D(2, padding="same"), Dropout(dropout, salt=block)]
    layers += [L.Flatten()]
    for i, units in enumerate((256, 128)):
      layers += [L.Dense(units, use_bias=False), batch_norm(), L.LeakyReLU(0.1),
                 Dropout(dropout, salt=10 + i)]
    super().__init__(layers + [_logits(num_classes)], name="deep_cnn")


@register("strided_bn")
class StridedBN(Sequence):
  """A small all-convolutional BatchNorm network, the strongest single model
  of the Kaggle Digit Recognizer kernels: 326,826 parameters (325,994 trainable).

  [Conv 32 3x3, Conv 32 3x3, Conv 32 5x5 stride 2] (28 -> 12), Dropout .4,
  [Conv 64 3x3, Conv 64 3x3, Conv 64 5x5 stride 2] (12 -> 4), Dropout .4,
  Conv 128 4x4 (4 -> 1), Dropout .4, Dense classes. Every convolution is
  followed by BatchNorm and ReLU; strided convolutions replace pooling.
  """

  def __init__(self, num_classes, dropout=0.4):
    super().__init__(_strided_bn_layers(num_classes, dropout), name="strided_bn")


@register("strided_bn_deskew")
class StridedBNDeskew(Sequence):
  """strided_bn reading deskewed digits: a Deskew layer (no variables) takes
  each image's slant out before the first convolution, in training after the
  augmentation, and in evaluation and every export alike."""

  def __init__(self, num_classes, dropout=0.4):
    super().__init__([Deskew()] + _strided_bn_layers(num_classes, dropout),
                     name="strided_bn_deskew")


@register("strided_bn_wide")
class StridedBNWide(Sequence):
  """strided_bn with half again as many channels in every convolution
  (48, 96 and 192): 732,922 parameters, about 2.2x the multiply-adds. Every
  width is a multiple of 16, the block of oneDNN's bfloat16 kernels."""

  def __init__(self, num_classes, dropout=0.4):
    super().__init__(_strided_bn_layers(num_classes, dropout, widths=(48, 96, 192)),
                     name="strided_bn_wide")


def _strided_bn_layers(num_classes, dropout, widths=(32, 64, 128)):
  layers = []
  for block, filters in enumerate(widths[:2]):
    for kernel, stride in ((3, 1), (3, 1), (5, 2)):
      padding = "same" if stride == 2 else "valid"
      layers += conv_bn_relu(filters, kernel, stride, padding)
    layers += [Dropout(dropout, salt=block)]
  return layers + conv_bn_relu(widths[2], 4) + [L.Flatten(), Dropout(dropout, salt=2),
                                                 _logits(num_classes)]


@register("fast_cnn")
class FastCNN(Sequence):
  """A small BatchNorm network built for images per second: 98,986 parameters.

  Conv 32 5x5 stride 2 (28 -> 14), Conv 64 3x3 (14 -> 12), MaxPool (-> 6),
  Conv 128 3x3 (6 -> 4), MaxPool (-> 2), Dense classes; BatchNorm and ReLU
  after every convolution. The strided first layer keeps the activations at
  full resolution out of the network: on a CPU their element-wise work (BN,
  ReLU, pooling) costs more than the convolutions' arithmetic.
  """

  def __init__(self, num_classes, filters=(32, 64, 128), name="fast_cnn"):
    first, second, third = filters
    layers = (conv_bn_relu(first, 5, 2, "same") + conv_bn_relu(second, 3) +
              [L.MaxPooling2D(2)] + conv_bn_relu(third, 3) +
              [L.MaxPooling2D(2), L.Flatten(), _logits(num_classes)])
    super().__init__(layers, name=name)


@register("fast_cnn_lite")
class FastCNNLite(FastCNN):
  """fast_cnn with fewer channels where the activations are large: 50,242 parameters.

  Conv 24 5x5 stride 2 (28 -> 14), Conv 32 3x3 (14 -> 12), MaxPool (-> 6),
  Conv 128 3x3 (6 -> 4), MaxPool (-> 2), Dense classes; BatchNorm and ReLU
  after every convolution. The channels of the two large activations set the
  cost of a CPU step (their convolutions and element-wise work), the last
  convolution's width sets little of it: on an AVX2-only CPU this network
  trains 2.3x as many images/s as fast_cnn, and over 1.3 epochs with label
  smoothing it reads as much of the validation split as fast_cnn does in one.
  """

  def __init__(self, num_classes):
    super().__init__(num_classes, filters=(24, 32, 128), name="fast_cnn_lite")


@register("fast_cnn16")
class FastCNN16(FastCNN):
  """fast_cnn_lite with 16 channels in its first layer: 47,706 parameters.

  Conv 16 5x5 stride 2 (28 -> 14), Conv 32 3x3 (14 -> 12), MaxPool (-> 6),
  Conv 128 3x3 (6 -> 4), MaxPool (-> 2), Dense classes; BatchNorm and ReLU
  after every convolution. Every width is a multiple of 16, the channel block
  of oneDNN's bfloat16 kernels: on an Intel Xeon with AMX fast_cnn_lite's 24
  channels made mixed bfloat16 1.6x slower than float32, while this network
  trains faster in mixed bfloat16 than in float32, and faster than
  fast_cnn_lite in either.
  """

  def __init__(self, num_classes):
    super().__init__(num_classes, filters=(16, 32, 128), name="fast_cnn16")


@register("fast_cnn4")
class FastCNN4(Sequence):
  """fast_cnn with a fourth convolution, for accuracy in minutes: 142,506 parameters.

  Conv 32 5x5 stride 2 (28 -> 14), Conv 64 3x3 (-> 12), Conv 64 3x3 (-> 10),
  MaxPool (-> 5), Conv 128 3x3 (-> 3), Dense classes; BatchNorm and ReLU
  after every convolution. It trains at about 70% of fast_cnn's images/s.
  """

  def __init__(self, num_classes, filters=(32, 64, 64, 128), name="fast_cnn4"):
    first, second, third, fourth = filters
    layers = (conv_bn_relu(first, 5, 2, "same") + conv_bn_relu(second, 3) +
              conv_bn_relu(third, 3) + [L.MaxPooling2D(2)] + conv_bn_relu(fourth, 3) +
              [L.Flatten(), _logits(num_classes)])
    super().__init__(layers, name=name)


@register("fast_cnn4_lite")
class FastCNN4Lite(FastCNN4):
  """fast_cnn4 with fast_cnn_lite's narrow large layers: 89,090 parameters.

  Conv 24 5x5 stride 2 (28 -> 14), Conv 32 3x3 (-> 12), Conv 48 3x3 (-> 10),
  MaxPool (-> 5), Conv 128 3x3 (-> 3), Dense classes; BatchNorm and ReLU
  after every convolution. On an AVX2-only CPU it trains 1.8x as many
  images/s as fast_cnn4 (2,721 against 1,545).
  """

  def __init__(self, num_classes):
    super().__init__(num_classes, filters=(24, 32, 48, 128), name="fast_cnn4_lite")


@register("fast_cnn4_16")
class FastCNN416(FastCNN4):
  """fast_cnn4_lite with 16 channels in its first layer: 86,554 parameters.

  Conv 16 5x5 stride 2 (28 -> 14), Conv 32 3x3 (-> 12), Conv 48 3x3 (-> 10),
  MaxPool (-> 5), Conv 128 3x3 (-> 3), Dense classes; BatchNorm and ReLU
  after every convolution. Every width is a multiple of 16, so it trains
  faster in mixed bfloat16 than in float32 on an Intel Xeon with AMX, where
  fast_cnn4_lite's 24 channels made bfloat16 the slower of the two.
  """

  def __init__(self, num_classes):
    super().__init__(num_classes, filters=(16, 32, 48, 128), name="fast_cnn4_16")
