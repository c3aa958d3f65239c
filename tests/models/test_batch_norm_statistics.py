"""Tests of recomputing BatchNorm statistics as inference sees each layer's input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmnist import models
from tfmnist.data import pixels
from tfmnist.models import batch_norm_statistics as statistics
from tfmnist.models.convnets import Sequence
from tfmnist.models.layers import Dropout, batch_norm

L = keras.layers


def _images(count, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)


def _two_bn_model(seed=0):
  """Conv, BN, ReLU, Dropout .5, Conv, BN, ReLU, logits; moving statistics made up."""
  keras.utils.set_random_seed(seed)
  model = Sequence([L.Conv2D(4, 3, use_bias=False), batch_norm(), L.ReLU(),
                    Dropout(0.5, salt=0), L.Conv2D(6, 3, strides=2, use_bias=False),
                    batch_norm(), L.ReLU(), L.Flatten(), L.Dense(10, dtype="float32")])
  model(pixels.normalize(_images(1)), training=False)
  rng = np.random.default_rng(seed + 1)
  for layer in statistics.batch_norm_layers(model):
    channels = layer.moving_mean.shape[0]
    layer.moving_mean.assign(rng.normal(0, 1, channels).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 3, channels).astype(np.float32))
  return model


def _moments(values):
  values = np.asarray(values, np.float64)
  values = values.reshape(-1, values.shape[-1])
  return values.mean(0), values.var(0)


def _statistics(model):
  return [(layer.moving_mean.numpy(), layer.moving_variance.numpy())
          for layer in statistics.batch_norm_layers(model)]


def test_each_layer_gets_the_mean_and_variance_of_its_input_at_inference():
  model = _two_bn_model()
  images = _images(50)
  assert statistics.recompute(model, images, batch_size=16) == 2
  conv1, bn1, relu1, _, conv2, bn2 = model.stack[:6]
  x = pixels.normalize(images)
  first = conv1(x).numpy()
  mean, variance = _moments(first)
  np.testing.assert_allclose(bn1.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn1.moving_variance.numpy(), variance, rtol=1e-5)
  # The second layer sees the first normalised by its new statistics, dropout off.
  second = conv2(relu1(bn1(first, training=False))).numpy()
  mean, variance = _moments(second)
  np.testing.assert_allclose(bn2.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn2.moving_variance.numpy(), variance, rtol=1e-5)


def test_the_batch_size_changes_nothing_but_rounding():
  images = _images(53)  # 53 = 7 * 7 + 4: the last batch is short.
  small, large = _two_bn_model(), _two_bn_model()
  statistics.recompute(small, images, batch_size=7)
  statistics.recompute(large, images, batch_size=1000)
  for (mean_a, var_a), (mean_b, var_b) in zip(_statistics(small), _statistics(large)):
    np.testing.assert_allclose(mean_a, mean_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var_a, var_b, rtol=1e-5)


def test_recomputing_again_gives_the_same_statistics():
  """A rerun of a finished run recomputes; it must not drift."""
  model = _two_bn_model()
  images = _images(40)
  statistics.recompute(model, images)
  first = _statistics(model)
  before = [(m.copy(), v.copy()) for m, v in first]
  assert before[0][0].shape == (4,)
  statistics.recompute(model, images)
  for (mean_a, var_a), (mean_b, var_b) in zip(before, _statistics(model)):
    np.testing.assert_array_equal(mean_a, mean_b)
    np.testing.assert_array_equal(var_a, var_b)


def test_inference_after_recomputing_folds_again_and_changes_the_output():
  model = _two_bn_model()
  images = _images(30)
  before = model(pixels.normalize(images), training=False).numpy()
  calls = []
  statistics.recompute(model, images, on_layer=lambda done, total: calls.append((done, total)))
  assert calls == [(0, 2), (1, 2), (2, 2)]
  assert all(layer.statistics_sink is None for layer in statistics.batch_norm_layers(model))
  after = model(pixels.normalize(images), training=False).numpy()
  assert np.abs(after - before).max() > 1e-3


def test_layers_are_ordered_as_called_not_as_assigned():

  class Swapped(keras.Model):

    def __init__(self):
      super().__init__()
      self.second = batch_norm()  # Assigned first, called second.
      self.first = batch_norm()
      self.head = L.Dense(10)

    def call(self, images, training=False):
      x = L.Flatten()(images)
      return self.head(self.second(self.first(x, training=training) * 2.0, training=training))

  model = Swapped()
  model(tf.zeros([1, 28, 28, 1]))
  assert statistics.batch_norm_layers(model) == [model.first, model.second]
  images = _images(20)
  statistics.recompute(model, images)
  flat = pixels.normalize(images).numpy().reshape(20, -1)
  np.testing.assert_allclose(model.first.moving_mean.numpy(), flat.mean(0), atol=1e-6)
  normalised = model.first(tf.constant(flat), training=False).numpy() * 2.0
  np.testing.assert_allclose(model.second.moving_mean.numpy(), normalised.mean(0), atol=1e-5)


@pytest.mark.parametrize("name,count", [("strided_bn", 7), ("resnet", 13), ("mlp", 0),
                                        ("lenet", 0)])
def test_every_batch_norm_of_a_registered_model_is_found(name, count):
  model = models.create(name, 10)
  model(tf.zeros([1, 28, 28, 1]), training=False)
  found = statistics.batch_norm_layers(model)
  assert len(found) == count
  every = [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
           if isinstance(layer, L.BatchNormalization)]
  assert set(map(id, found)) == set(map(id, every))


def test_no_images_is_refused():
  with pytest.raises(ValueError, match="at least one image"):
    statistics.recompute(_two_bn_model(), np.zeros([0, 28, 28, 1], np.uint8))
