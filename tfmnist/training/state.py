"""The objects of one run (model, optimizer, schedule state, metrics, checkpoint), built
in the strategy scope: `create_run`."""

import dataclasses
from typing import Optional

import keras
import tensorflow as tf

from tfmnist import models
from tfmnist.data import pixels
from tfmnist.training import config as config_lib
from tfmnist.training import optim, schedules


@dataclasses.dataclass
class Run:
  """The objects of one run, created in the strategy scope."""
  strategy: tf.distribute.Strategy
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  plateau: schedules.Plateau
  step: tf.Variable
  best_accuracy: tf.Variable
  stale_epochs: tf.Variable
  train_loss: keras.metrics.Metric
  train_accuracy: keras.metrics.Metric
  checkpoint: tf.train.Checkpoint
  weight_average: Optional[optim.WeightAverage] = None

  @property
  def learning_rate(self):
    """The optimizer's current learning rate (schedule times plateau factor)."""
    return float(self.optimizer.learning_rate.numpy())


def schedule_config(config, total_steps, steps_per_epoch):
  """The ScheduleConfig of a TrainConfig: every duration in steps, converted once.

  With SWA the schedule's run ends where the average starts: a cosine holds
  final_lr_fraction x learning_rate from there on, a one-cycle its last rate.
  """
  if config.swa_start_epoch > 0:
    total_steps = config_lib.swa_start_step(config, steps_per_epoch)
  return schedules.ScheduleConfig(
      name=config.schedule, base_lr=config.learning_rate, total_steps=total_steps,
      warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
      decay_steps=max(1, int(round(config.decay_epochs * steps_per_epoch))),
      decay_rate=config.decay_rate, final_lr_fraction=config.final_lr_fraction)


def create_run(config, strategy, num_classes, sample_images, total_steps, steps_per_epoch):
  """Builds model, optimizer, metrics and checkpoint inside the strategy scope.

  Args:
    config: TrainConfig with its precision resolved (the dtype policy is set).
    strategy: the run's tf.distribute strategy.
    num_classes: outputs of the model.
    sample_images: uint8 [B, 28, 28, 1] real images (one replica's batch):
      Keras 3 builds a subclassed model only when called on real data.
    total_steps, steps_per_epoch: the run's length in steps.
  """
  with strategy.scope():
    model = models.create(config.model, num_classes)
    model(pixels.normalize(sample_images), training=False)
    plateau = schedules.Plateau(config.plateau)
    optimizer = optim.create(
        config.optimizer,
        schedules.ScaledSchedule(schedule_config(config, total_steps, steps_per_epoch),
                                 plateau.scale),
        loss_scaling=config.precision == "mixed_float16")
    # The optimizer's variables must exist before a checkpoint is restored
    # into them and before the loop is traced.
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    best_accuracy = tf.Variable(-1.0, trainable=False, name="best_accuracy")
    stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="stale_epochs")
    train_loss = keras.metrics.Mean("loss")
    train_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    saved = dict(model=model, optimizer=optimizer, plateau=plateau, step=step,
                 best_accuracy=best_accuracy, stale_epochs=stale_epochs)
    weight_average = config_lib.weight_average(config, model.variables, steps_per_epoch)
    if weight_average is not None:
      saved["weight_average"] = weight_average
    checkpoint = tf.train.Checkpoint(**saved)
  return Run(strategy, model, optimizer, plateau, step, best_accuracy, stale_epochs,
             train_loss, train_accuracy, checkpoint, weight_average)
