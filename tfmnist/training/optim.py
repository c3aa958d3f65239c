"""Optimizers by name, with weight decay and loss scaling; the weight average (EMA or SWA)."""

import dataclasses

import keras
import tensorflow as tf

from tfmnist.training.choices import OPTIMIZERS


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer settings.

  Attributes:
    name: one of OPTIMIZERS.
    momentum: SGD/RMSprop momentum.
    nesterov: Nesterov momentum for SGD.
    beta_1, beta_2: Adam/AdamW moment decays.
    rho: RMSprop decay of the squared-gradient average.
    epsilon: denominator guard (Adam, RMSprop).
    weight_decay: decoupled weight decay; each step shrinks every variable by
      learning rate x weight_decay (Keras semantics; 0 = off).
    ema_decay: decay of the exponential moving average of the weights used
      for evaluation and export (0 = off).
  """
  name: str = "adam"
  momentum: float = 0.0
  nesterov: bool = False
  beta_1: float = 0.9
  beta_2: float = 0.999
  rho: float = 0.9
  epsilon: float = 1e-7
  weight_decay: float = 0.0
  ema_decay: float = 0.0


def create(config, learning_rate, loss_scaling=False):
  """Builds the Keras optimizer.

  Args:
    config: OptimizerConfig.
    learning_rate: float or a LearningRateSchedule.
    loss_scaling: wrap in a dynamic LossScaleOptimizer (mixed_float16).
  """
  common = dict(learning_rate=learning_rate, weight_decay=config.weight_decay or None)
  if config.name == "adam":
    optimizer = keras.optimizers.Adam(beta_1=config.beta_1, beta_2=config.beta_2,
                                      epsilon=config.epsilon, **common)
  elif config.name == "adamw":
    optimizer = keras.optimizers.AdamW(beta_1=config.beta_1, beta_2=config.beta_2,
                                       epsilon=config.epsilon,
                                       **{**common, "weight_decay": config.weight_decay})
  elif config.name == "rmsprop":
    optimizer = keras.optimizers.RMSprop(rho=config.rho, momentum=config.momentum,
                                         epsilon=config.epsilon, **common)
  elif config.name == "sgd":
    optimizer = keras.optimizers.SGD(momentum=config.momentum, nesterov=config.nesterov,
                                     **common)
  else:
    raise ValueError(f"unknown optimizer {config.name!r}; choose one of {', '.join(OPTIMIZERS)}")
  if loss_scaling:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


class WeightAverage(tf.Module):
  """Average of every variable of a model over the training steps: EMA or SWA.

  Keras's optimizer EMA averages the trainable weights only. A BatchNorm
  model evaluated with averaged weights but the raw moving statistics is
  inconsistent (here strided_bn scored 27% on validation that way while it
  trained at 98%), so this averages all of `model.variables`, BatchNorm
  statistics included. The averages start as copies of the variables. Each
  update is average = d * average + (1 - d) * variable, with d by kind:
  - EMA (`decay`): d warms up as min(decay, (1 + n) / (10 + n)) after n
    updates, so the initial weights fade within the first steps instead of
    holding the average near them (at 0.999 they kept strided_bn at chance
    on validation for seven epochs of best.flags);
  - SWA (`start_step`): d is 0 before the start, so the average follows the
    weights, and n / (n + 1) from the start, where the update is the n-th
    after it: the equal-weight mean of the weights after every step from
    the start on (Izmailov et al. 2018, stochastic weight averaging).
    Before the start the train step skips the update, a copy of every
    variable, and `follow` makes the copy once each time the training loop
    hands back control, before anything reads the average: validation,
    checkpoints and the export see what an update at every step would have
    left.
  n counts training steps, which the checkpoint keeps, so a resumed run
  averages as an uninterrupted one.

  Args:
    variables: the model's variables (create this in the strategy scope).
    decay: EMA: weight of the old average at each update.
    start_step: SWA: the step whose weights the mean starts with (None: EMA).
  """

  def __init__(self, variables, decay=0.0, start_step=None):
    super().__init__(name="weight_average")
    if (start_step is None) == (not decay):
      raise ValueError("a weight average is an EMA (decay) or SWA (start_step): "
                       "give one of the two")
    self.decay = float(decay)
    self.start_step = start_step
    # ONLY_FIRST_REPLICA: every replica holds the same weights after the
    # update, and a replica-context assign needs an aggregation.
    self.averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"average_{i}",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                     for i, v in enumerate(variables)]

  def decay_at(self, step):
    """The decay of the update after `step` earlier ones (a scalar float32 tensor)."""
    n = tf.cast(step, tf.float32)
    if self.start_step is not None:
      since = tf.maximum(n - float(self.start_step), 0.0)
      return since / (since + 1.0)
    return tf.minimum(self.decay, (1.0 + n) / (10.0 + n))

  def update(self, variables, step):
    """average = d * average + (1 - d) * variable, d = decay_at(step); runs in replica context.

    SWA skips the update before its start (see `follow`).

    Args:
      variables: the model's variables, in the order given at construction.
      step: how many updates came before this one (the training step).
    """

    def assign():
      decay = self.decay_at(step)
      for average, variable in zip(self.averages, variables):
        value = tf.convert_to_tensor(variable)
        average.assign(tf.cast(decay, value.dtype) * average +
                       tf.cast(1.0 - decay, value.dtype) * value)
      return tf.constant(True)

    if self.start_step is None:
      assign()
    else:
      tf.cond(tf.cast(step, tf.int64) >= self.start_step, assign, lambda: tf.constant(False))

  def follow(self, variables, step):
    """SWA before its start: average = variable, what the skipped updates would have left.

    Call it after training steps and before the average is read; a no-op for
    an EMA and from the SWA's start on, where the updates keep the average.

    Args:
      variables: the model's variables, in the order given at construction.
      step: the training steps done so far.
    """
    if self.start_step is not None and step <= self.start_step:
      self.copy_from(variables)

  def copy_from(self, variables):
    """average = variable for every variable (cross-replica or eager)."""
    for average, variable in zip(self.averages, variables):
      average.assign(variable)

  def copy_to(self, variables):
    """variable = average for every variable (cross-replica or eager): the weights become
    the average, for validation, the export or serving."""
    for variable, average in zip(variables, self.averages):
      variable.assign(average)
