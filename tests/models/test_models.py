"""Tests of the model registry and the stateless Dropout."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmnist import models
from tfmnist.models import layers
from tfmnist.models.layers import Dropout, Noise

NUM_CLASSES = 12  # Not 10, so that a model ignoring num_classes shows.


@pytest.fixture
def policy(request):
  keras.mixed_precision.set_global_policy(request.param)
  yield request.param
  keras.mixed_precision.set_global_policy("float32")


def _images(batch, seed=0):
  return tf.random.stateless_uniform([batch, 28, 28, 1], [seed, 1])


def _noise(step=0, row_offset=0, global_batch_size=3):
  return Noise(tf.constant([7, step], tf.int64), row_offset, global_batch_size)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("name", models.names())
def test_every_model_gives_float32_logits(name, policy):
  model = models.create(name, NUM_CLASSES)
  logits = model(_images(3), training=False)
  assert logits.dtype == tf.float32, (name, policy)
  assert logits.shape == (3, NUM_CLASSES)
  assert np.all(np.isfinite(logits.numpy()))
  trained = model(_images(3), training=True, noise=_noise())
  assert trained.dtype == tf.float32 and trained.shape == (3, NUM_CLASSES)


def test_registry_lists_the_models_and_rejects_unknown_names():
  assert {"mlp", "lenet", "lenet5", "kaggle_cnn", "strided_bn", "strided_bn_wide",
          "strided_bn_deskew", "deep_cnn", "fast_cnn", "fast_cnn_lite", "fast_cnn16", "fast_cnn4",
          "fast_cnn4_lite", "fast_cnn4_16", "resnet", "m3", "m5", "m7"} <= set(models.names())
  with pytest.raises(ValueError, match="unknown model 'nope'.*lenet5"):
    models.create("nope", 10)


@pytest.mark.parametrize("name,count", [("lenet", 1_199_882), ("kaggle_cnn", 887_530),
                                        ("lenet5", 61_706), ("strided_bn", 326_826),
                                        ("strided_bn_wide", 732_922),
                                        ("fast_cnn", 98_986), ("fast_cnn_lite", 50_242),
                                        ("fast_cnn16", 47_706), ("fast_cnn4", 142_506),
                                        ("fast_cnn4_lite", 89_090), ("fast_cnn4_16", 86_554)])
def test_parameter_counts(name, count):
  model = models.create(name, 10)
  model(_images(1), training=False)
  assert model.count_params() == count


def test_strided_bn_wide_is_strided_bn_with_half_again_the_channels():
  def convolutions(name):
    model = models.create(name, NUM_CLASSES)
    model(_images(1), training=False)
    return [(layer.filters, layer.kernel_size, layer.strides) for layer in model.stack
            if isinstance(layer, keras.layers.Conv2D)]

  plain, wide = convolutions("strided_bn"), convolutions("strided_bn_wide")
  assert [(3 * filters // 2, kernel, strides) for filters, kernel, strides in plain] == wide
  assert all(filters % 16 == 0 for filters, _, _ in wide)


def test_dropout_is_the_identity_when_not_training():
  layer = Dropout(0.5, salt=0)
  x = _images(3)
  np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
  # No Noise is needed to evaluate, and rate 0 never needs one either.
  np.testing.assert_array_equal(Dropout(0.0, salt=0)(x, training=True).numpy(), x.numpy())


def test_dropout_drops_a_fraction_and_rescales_the_rest():
  layer = Dropout(0.25, salt=0)
  x = tf.ones([4, 1000])
  y = layer(x, training=True, noise=_noise(global_batch_size=4)).numpy()
  assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
  assert abs((y == 0).mean() - 0.25) < 0.03


def test_dropout_same_noise_gives_the_same_mask():
  layer = Dropout(0.5, salt=0)
  x = _images(3)
  first = layer(x, training=True, noise=_noise(step=4)).numpy()
  again = layer(x, training=True, noise=_noise(step=4)).numpy()
  np.testing.assert_array_equal(first, again)
  other_step = layer(x, training=True, noise=_noise(step=5)).numpy()
  assert not np.array_equal(first, other_step)
  # The salt separates the layers of one model: the same Noise, other masks.
  other_layer = Dropout(0.5, salt=1)(x, training=True, noise=_noise(step=4)).numpy()
  assert not np.array_equal(first, other_layer)


def test_dropout_replica_takes_its_rows_of_the_global_draw():
  layer = Dropout(0.5, salt=3)
  x = _images(6)
  whole = layer(x, training=True, noise=_noise(step=2, global_batch_size=6)).numpy()
  part = layer(x[2:4], training=True,
               noise=_noise(step=2, row_offset=2, global_batch_size=6)).numpy()
  np.testing.assert_array_equal(part, whole[2:4])
  # Inside tf.function the offset is a tensor, as in the train step.
  traced = tf.function(lambda images, offset: layer(
      images, training=True, noise=_noise(step=2, row_offset=offset, global_batch_size=6)))
  np.testing.assert_array_equal(traced(x[4:], tf.constant(4)).numpy(), whole[4:])


def test_dropout_training_without_noise_raises():
  layer = Dropout(0.5, salt=0)
  with pytest.raises(ValueError, match="training needs a Noise"):
    layer(_images(2), training=True)


@pytest.mark.parametrize("name", models.names())
def test_checkpoint_holds_every_variable(name, tmp_path):
  # BatchNorm moving statistics are in no optimizer: only the model's own
  # checkpoint dependencies can save them for a resumed run.
  model = models.create(name, 10)
  model(_images(4), training=True, noise=_noise(global_batch_size=4))  # Moves BN statistics.
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  saved = [n for n, _ in tf.train.list_variables(path) if n.startswith("model/")]
  assert len(saved) == len(model.variables)

  fresh = models.create(name, 10)
  fresh(_images(1), training=False)
  tf.train.Checkpoint(model=fresh).restore(path).assert_consumed()
  for a, b in zip(model.variables, fresh.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  np.testing.assert_array_equal(model(_images(2, seed=5), training=False).numpy(),
                                fresh(_images(2, seed=5), training=False).numpy())


def test_batch_norm_statistics_catch_up_within_a_hundred_steps():
  """After 100 training steps the moving variance is the data's, not the initial 1
  (Keras's default momentum 0.99 would still carry 37% of it)."""
  from tfmnist.models.layers import batch_norm  # pylint: disable=g-import-not-at-top
  layer = batch_norm()
  x = 0.5 + 0.06 * tf.random.stateless_normal([256, 4, 4, 3], [1, 2])  # Variance 0.0036.
  for _ in range(100):
    layer(x, training=True)
  np.testing.assert_allclose(layer.moving_variance.numpy(), np.var(x.numpy(), (0, 1, 2)),
                             rtol=0.05)
  np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean(x.numpy(), (0, 1, 2)),
                             rtol=0.01)


# ----------------------------------------------------------------------------
# BatchNorm folded into the layer before it at inference
# ----------------------------------------------------------------------------


def _randomise_batch_norms(model, seed=0):
  """Moving statistics and affine weights far from their initial values."""
  rng = np.random.default_rng(seed)
  found = 0
  for layer in model._flatten_layers():  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      shape = layer.moving_mean.shape
      layer.moving_mean.assign(rng.normal(0.0, 0.5, shape))
      layer.moving_variance.assign(rng.uniform(0.2, 3.0, shape))
      layer.gamma.assign(rng.uniform(0.5, 2.0, shape))
      layer.beta.assign(rng.normal(0.0, 0.5, shape))
      found += 1
  return found


@pytest.mark.parametrize("policy,tolerance", [("float32", 1e-5), ("mixed_bfloat16", 0.05)],
                         indirect=["policy"])
@pytest.mark.parametrize("name", ["strided_bn", "strided_bn_wide", "fast_cnn_lite", "fast_cnn16",
                                  "fast_cnn4", "fast_cnn4_lite", "fast_cnn4_16", "deep_cnn",
                                  "resnet", "m7"])
def test_folded_inference_equals_the_plain_layers(name, policy, tolerance, monkeypatch):
  model = models.create(name, NUM_CLASSES)
  images = _images(4)
  model(images, training=False)
  assert _randomise_batch_norms(model) > 0
  folded = tf.function(lambda x: model(x, training=False))(images).numpy()
  monkeypatch.setattr(layers, "_foldable", lambda *args: False)
  plain = tf.function(lambda x: model(x, training=False))(images).numpy()
  scale = np.abs(plain).max()
  np.testing.assert_allclose(folded / scale, plain / scale, atol=tolerance)
  assert np.abs(folded - plain).max() > 0  # Really another computation.


def test_inference_calls_no_batch_norm_and_training_calls_every_one():
  model = models.create("strided_bn", NUM_CLASSES)
  model(_images(2), training=False)
  calls = []
  for layer in model.stack:
    if isinstance(layer, keras.layers.BatchNormalization):
      plain_call = layer.call
      layer.call = (lambda f: lambda *a, **k: calls.append(1) or f(*a, **k))(plain_call)
  model(_images(2), training=False)
  assert not calls
  model(_images(2), training=True, noise=_noise(global_batch_size=2))
  assert len(calls) == 7


@pytest.mark.parametrize("kind", ["conv_valid", "conv_same_stride2_bias", "dense_bias"])
def test_fold_of_one_layer(kind):
  """linear_then_batch_norm against bn(linear(x)) for each supported layer."""
  linear, x = {
      "conv_valid": (keras.layers.Conv2D(5, 3, use_bias=False), _images(3)),
      "conv_same_stride2_bias": (keras.layers.Conv2D(5, 5, 2, padding="same"), _images(3)),
      "dense_bias": (keras.layers.Dense(7), tf.reshape(_images(3), [3, -1])),
  }[kind]
  bn = keras.layers.BatchNormalization()
  bn(linear(x), training=False)
  if linear.use_bias:
    linear.bias.assign(np.linspace(-1, 1, linear.bias.shape[0]))
  wrapper = keras.Model()
  wrapper.bn = bn
  assert _randomise_batch_norms(wrapper, seed=1) == 1
  np.testing.assert_allclose(layers.linear_then_batch_norm(linear, bn, x).numpy(),
                             bn(linear(x), training=False).numpy(), rtol=1e-4, atol=1e-5)
  # Training uses the batch statistics, like the layers themselves.
  np.testing.assert_array_equal(layers.linear_then_batch_norm(linear, bn, x, training=True),
                                bn(linear(x), training=True))


@pytest.mark.parametrize("policy,tolerance", [("float32", 1e-5), ("mixed_bfloat16", 0.02)],
                         indirect=["policy"])
def test_fused_training_batch_norm_matches_keras(policy, tolerance):
  """Outputs, gradients and moving statistics of a training step equal Keras's."""
  x = tf.random.stateless_normal([6, 5, 5, 4], [1, 2]) * 3.0 + 1.0
  ours, theirs = layers.batch_norm(), keras.layers.BatchNormalization(momentum=0.9)
  for layer in (ours, theirs):
    layer.build(x.shape)
    layer.gamma.assign([0.5, 1.0, 1.5, 2.0])
    layer.beta.assign([0.1, -0.2, 0.3, 0.0])
  upstream = tf.random.stateless_normal([6, 5, 5, 4], [3, 4])
  results = []
  for layer in (ours, theirs):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    results.append([y] + grads + [layer.moving_mean, layer.moving_variance])
  for a, b in zip(*results):
    a, b = np.asarray(tf.cast(a, tf.float32)), np.asarray(tf.cast(b, tf.float32))
    np.testing.assert_allclose(a, b, atol=tolerance * max(1.0, np.abs(b).max()))
  assert results[0][0].dtype == results[1][0].dtype


def test_fused_training_batch_norm_is_one_op():
  """One replica: a single fused op. (Two replicas take Keras's synchronised
  path; test_train compares one- and two-replica BatchNorm runs.)"""
  x = tf.random.stateless_normal([4, 3, 3, 2], [0, 1])
  layer = layers.batch_norm()
  layer.build(x.shape)
  graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(x).graph
  types = [op.type for op in graph.get_operations()]
  assert types.count("FusedBatchNormV3") == 1 and "Mean" not in types
