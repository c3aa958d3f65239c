"""Tests of the optimizers' decoupled weight decay, as --weight_decay documents it."""

import numpy as np
import pytest
import tensorflow as tf

from tfmnist.training import optim


def after_one_zero_gradient_step(config, learning_rate=0.5):
  """The weights [2, -4] after one step of a zero gradient, which leaves only
  the decay: Adam's and RMSprop's step is 0 / (sqrt(0) + epsilon) = 0, SGD's 0."""
  variable = tf.Variable([2.0, -4.0])
  optimizer = optim.create(config, learning_rate=learning_rate)
  optimizer.build([variable])
  optimizer.apply_gradients([(tf.zeros_like(variable), variable)])
  return variable.numpy()


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_weight_decay_shrinks_by_learning_rate_times_decay(name):
  weights = after_one_zero_gradient_step(optim.OptimizerConfig(name=name, weight_decay=0.1))
  np.testing.assert_allclose(weights, np.array([2.0, -4.0]) * (1 - 0.5 * 0.1), rtol=1e-6)


def test_no_weight_decay_leaves_a_zero_gradient_step_alone():
  np.testing.assert_allclose(after_one_zero_gradient_step(optim.OptimizerConfig(name="adamw")),
                             [2.0, -4.0])
