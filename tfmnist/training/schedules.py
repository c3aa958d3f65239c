"""Learning-rate schedules as formulas of the step, and reduce-on-plateau.

Every duration is in steps here; the entry point converts epochs to steps
once. `learning_rate(step, config)` reads as the formula it computes;
`Plateau` multiplies it by a factor that the outer loop lowers when the
monitored validation metric stops improving, and keeps its state in
variables so that it is checkpointed.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tfmnist.training.choices import SCHEDULES


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Learning rate over the steps of a run.

  Attributes:
    name: one of SCHEDULES.
    base_lr: peak learning rate (after warmup).
    total_steps: steps of the whole run (cosine and one-cycle end there).
    warmup_steps: linear warmup from 0 to base_lr (all schedules but onecycle).
    decay_steps: period of the step and exponential decays.
    decay_rate: factor per period (step: multiply every period; exponential:
      base_lr * rate ** (step / period)).
    final_lr_fraction: cosine ends at base_lr times this.
    onecycle_pct_start: fraction of the run spent rising (one-cycle).
    onecycle_div: one-cycle starts at base_lr / div and ends at base_lr / div / 1e4.
  """
  name: str = "constant"
  base_lr: float = 1e-3
  total_steps: int = 1
  warmup_steps: int = 0
  decay_steps: int = 1
  decay_rate: float = 0.1
  final_lr_fraction: float = 0.0
  onecycle_pct_start: float = 0.3
  onecycle_div: float = 25.0


def learning_rate(step, config):
  """The scheduled learning rate at `step` (float32 tensor)."""
  step = tf.cast(step, tf.float32)
  base = config.base_lr
  total = float(max(config.total_steps, 1))
  if config.name == "onecycle":
    # Cosine rise from base/div to base, then cosine fall to base/div/1e4.
    rise = max(config.onecycle_pct_start * total, 1.0)
    start, end = base / config.onecycle_div, base / config.onecycle_div / 1e4
    up = start + (base - start) * 0.5 * (1 - tf.cos(math.pi * tf.minimum(step / rise, 1.0)))
    fall_t = tf.clip_by_value((step - rise) / max(total - rise, 1.0), 0.0, 1.0)
    down = end + (base - end) * 0.5 * (1 + tf.cos(math.pi * fall_t))
    return tf.where(step < rise, up, down)
  warmup = float(config.warmup_steps)
  after = tf.maximum(step - warmup, 0.0)
  if config.name == "constant":
    lr = tf.constant(base, tf.float32)
  elif config.name == "step":
    lr = base * config.decay_rate ** tf.floor(after / config.decay_steps)
  elif config.name == "exponential":
    lr = base * config.decay_rate ** (after / config.decay_steps)
  elif config.name == "cosine":
    t = tf.minimum(after / max(total - warmup, 1.0), 1.0)
    floor = base * config.final_lr_fraction
    lr = floor + (base - floor) * 0.5 * (1 + tf.cos(math.pi * t))
  else:
    raise ValueError(f"unknown schedule {config.name!r}; choose one of {', '.join(SCHEDULES)}")
  if config.warmup_steps:
    lr = lr * tf.minimum(step / warmup, 1.0)
  return lr


@dataclasses.dataclass(frozen=True)
class PlateauConfig:
  """Reduce-on-plateau: multiply the rate by `factor` after `patience` evaluations
  without improvement of `monitor` by more than `min_delta`.

  Attributes:
    monitor: "val_accuracy" (higher is better) or "val_loss" (lower is better);
      empty turns it off.
    factor, patience, cooldown (evaluations to wait after a reduction),
    min_lr (floor of the resulting rate), min_delta.
  """
  monitor: str = ""
  factor: float = 0.5
  patience: int = 3
  cooldown: int = 0
  min_lr: float = 0.0
  min_delta: float = 0.0


class Plateau(tf.Module):
  """Reduce-on-plateau state (tf.Variables, checkpointed) and its update rule."""

  def __init__(self, config):
    super().__init__(name="plateau")
    self.config = config
    self.scale = tf.Variable(1.0, trainable=False, name="scale")
    self.best = tf.Variable(float("nan"), trainable=False, name="best")
    self.wait = tf.Variable(0, trainable=False, name="wait")
    self.cooldown_left = tf.Variable(0, trainable=False, name="cooldown_left")

  def update(self, metrics, current_lr):
    """Called eagerly after each validation; returns True when it reduced the rate."""
    if not self.config.monitor:
      return False
    # Rounded to float32 as `best` keeps it: a repeat of the best value must
    # not look better (or worse) than its own float32 copy.
    value = float(np.float32(metrics[self.config.monitor]))
    sign = -1.0 if self.config.monitor.endswith("loss") else 1.0
    best = float(self.best.numpy())
    if math.isnan(best) or sign * (value - best) > self.config.min_delta:
      self.best.assign(value)
      self.wait.assign(0)
    else:
      self.wait.assign_add(1)
    if int(self.cooldown_left.numpy()) > 0:
      self.cooldown_left.assign_sub(1)
      self.wait.assign(0)
      return False
    # The rate is float32: once cut to min_lr it may read a few ulps above it.
    above_floor = current_lr > self.config.min_lr * (1 + 1e-6)
    if int(self.wait.numpy()) >= self.config.patience and above_floor:
      new_lr = max(current_lr * self.config.factor, self.config.min_lr)
      self.scale.assign(self.scale * new_lr / current_lr)
      self.wait.assign(0)
      self.cooldown_left.assign(self.config.cooldown)
      return True
    return False


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """The optimizer's schedule: learning_rate(step) times the plateau scale."""

  def __init__(self, config, scale):
    super().__init__()
    self.config = config
    self.scale = scale

  def __call__(self, step):
    return learning_rate(step, self.config) * self.scale

  def get_config(self):
    return dataclasses.asdict(self.config)
