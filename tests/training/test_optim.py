"""Tests of the optimizers' decoupled weight decay, as --weight_decay documents it."""

import numpy as np
import pytest
import tensorflow as tf

from tfmnist.training import optim


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_weight_decay_shrinks_by_learning_rate_times_decay(name):
  # A zero gradient leaves only the decay: Adam's and RMSprop's step is
  # 0 / (sqrt(0) + epsilon) = 0, and SGD's is 0.
  variable = tf.Variable([2.0, -4.0])
  optimizer = optim.create(optim.OptimizerConfig(name=name, weight_decay=0.1), learning_rate=0.5)
  optimizer.build([variable])
  optimizer.apply_gradients([(tf.zeros_like(variable), variable)])
  np.testing.assert_allclose(variable.numpy(), np.array([2.0, -4.0]) * (1 - 0.5 * 0.1), rtol=1e-6)


def test_no_weight_decay_leaves_a_zero_gradient_step_alone():
  variable = tf.Variable([2.0, -4.0])
  optimizer = optim.create(optim.OptimizerConfig(name="adamw"), learning_rate=0.5)
  optimizer.build([variable])
  optimizer.apply_gradients([(tf.zeros_like(variable), variable)])
  np.testing.assert_allclose(variable.numpy(), [2.0, -4.0])
