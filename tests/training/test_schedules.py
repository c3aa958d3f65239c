"""Tests of the learning-rate formulas and of reduce-on-plateau."""

import math

import pytest
import tensorflow as tf

from tfmnist.training import schedules
from tfmnist.training.schedules import PlateauConfig, ScheduleConfig, learning_rate


def lr_at(step, **fields):
  return float(learning_rate(step, ScheduleConfig(**fields)))


def test_constant():
  for step in (0, 1, 50, 10_000):
    assert lr_at(step, name="constant", base_lr=0.1, total_steps=100) == pytest.approx(0.1)


def test_step_decay_multiplies_every_period():
  fields = dict(name="step", base_lr=0.1, decay_steps=10, decay_rate=0.5, total_steps=100)
  expected = {0: 0.1, 9: 0.1, 10: 0.05, 19: 0.05, 25: 0.025, 30: 0.0125}
  for step, lr in expected.items():
    assert lr_at(step, **fields) == pytest.approx(lr, rel=1e-6), step


def test_exponential_decay_is_continuous():
  fields = dict(name="exponential", base_lr=0.1, decay_steps=10, decay_rate=0.5)
  for step, lr in {0: 0.1, 5: 0.1 * 0.5 ** 0.5, 10: 0.05, 25: 0.1 * 0.5 ** 2.5}.items():
    assert lr_at(step, **fields) == pytest.approx(lr, rel=1e-6), step


def test_cosine_start_middle_end_with_final_fraction():
  fields = dict(name="cosine", base_lr=0.1, total_steps=100, final_lr_fraction=0.1)
  assert lr_at(0, **fields) == pytest.approx(0.1)
  # Halfway the cosine factor is 1/2: floor + (base - floor) / 2.
  assert lr_at(50, **fields) == pytest.approx(0.01 + 0.09 * 0.5, rel=1e-6)
  assert lr_at(25, **fields) == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi / 4)),
                                              rel=1e-6)
  assert lr_at(100, **fields) == pytest.approx(0.01, rel=1e-6)
  assert lr_at(150, **fields) == pytest.approx(0.01, rel=1e-6)  # Stays at the floor.
  assert lr_at(100, **{**fields, "final_lr_fraction": 0.0}) == pytest.approx(0.0, abs=1e-9)


def test_warmup_rises_linearly_from_zero():
  fields = dict(name="constant", base_lr=0.1, warmup_steps=10, total_steps=100)
  for step, lr in {0: 0.0, 1: 0.01, 5: 0.05, 10: 0.1, 50: 0.1}.items():
    assert lr_at(step, **fields) == pytest.approx(lr, rel=1e-6, abs=1e-9), step


def test_warmup_then_cosine_decays_over_the_rest():
  fields = dict(name="cosine", base_lr=0.1, warmup_steps=10, total_steps=110)
  assert lr_at(0, **fields) == pytest.approx(0.0, abs=1e-9)
  assert lr_at(10, **fields) == pytest.approx(0.1)
  assert lr_at(60, **fields) == pytest.approx(0.05, rel=1e-6)
  assert lr_at(110, **fields) == pytest.approx(0.0, abs=1e-9)


def test_onecycle_rises_to_the_peak_then_anneals():
  base, div = 0.1, 25.0
  fields = dict(name="onecycle", base_lr=base, total_steps=100, onecycle_pct_start=0.3,
                onecycle_div=div)
  start, end = base / div, base / div / 1e4
  assert lr_at(0, **fields) == pytest.approx(start, rel=1e-6)
  assert lr_at(15, **fields) == pytest.approx((start + base) / 2, rel=1e-6)
  assert lr_at(30, **fields) == pytest.approx(base, rel=1e-6)
  assert lr_at(65, **fields) == pytest.approx((base + end) / 2, rel=1e-6)
  assert lr_at(100, **fields) == pytest.approx(end, rel=1e-3)
  assert lr_at(29, **fields) < lr_at(30, **fields) > lr_at(31, **fields)


def test_unknown_schedule_raises():
  with pytest.raises(ValueError, match="unknown schedule 'linear'"):
    lr_at(0, name="linear")


def test_scaled_schedule_multiplies_by_the_plateau_scale():
  scale = tf.Variable(1.0)
  schedule = schedules.ScaledSchedule(ScheduleConfig(name="constant", base_lr=0.1), scale)
  assert float(schedule(3)) == pytest.approx(0.1)
  scale.assign(0.25)
  assert float(schedule(3)) == pytest.approx(0.025)


class Simulation:
  """Feeds a Plateau a sequence of metric values, as the outer loop does."""

  def __init__(self, base_lr=0.1, **fields):
    self.plateau = schedules.Plateau(PlateauConfig(**fields))
    self.schedule = schedules.ScaledSchedule(ScheduleConfig(base_lr=base_lr),
                                             self.plateau.scale)

  @property
  def lr(self):
    """The float32 rate the optimizer reads, as train_lib.current_lr."""
    return float(self.schedule(0).numpy())

  def feed(self, values):
    """Returns the (1-based) evaluations at which the rate was cut."""
    key = self.plateau.config.monitor
    return [i + 1 for i, value in enumerate(values)
            if self.plateau.update({key: value}, self.lr)]


def test_plateau_reduces_after_patience_evaluations_without_improvement():
  sim = Simulation(monitor="val_accuracy", factor=0.5, patience=2)
  assert sim.feed([0.5, 0.6, 0.6, 0.55]) == [4]
  assert sim.lr == pytest.approx(0.05)
  # After a cut, patience counts again from zero.
  assert sim.feed([0.6]) == []
  assert sim.feed([0.6]) == [1]
  assert sim.lr == pytest.approx(0.025)


def test_plateau_improvement_resets_the_wait():
  sim = Simulation(monitor="val_accuracy", factor=0.5, patience=2)
  assert sim.feed([0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8]) == []
  assert sim.lr == pytest.approx(0.1)


def test_plateau_cooldown_skips_evaluations_after_a_cut():
  sim = Simulation(monitor="val_accuracy", factor=0.5, patience=1, cooldown=2)
  # Cut at 2; evaluations 3 and 4 are the cooldown; 5 waits one patience again.
  assert sim.feed([0.9] * 6) == [2, 5]
  without = Simulation(monitor="val_accuracy", factor=0.5, patience=1)
  assert without.feed([0.9] * 6) == [2, 3, 4, 5, 6]


def test_plateau_respects_min_lr():
  sim = Simulation(monitor="val_accuracy", factor=0.1, patience=1, min_lr=0.005)
  assert sim.feed([0.9] * 5) == [2, 3]
  assert sim.lr == pytest.approx(0.005)


@pytest.mark.parametrize("base_lr,factor,min_lr", [(0.1, 0.5, 1e-3), (1e-3, 0.5, 3e-6),
                                                   (0.1, 0.1, 1e-3), (1e-3, 0.3, 1e-4)])
def test_plateau_stops_cutting_at_min_lr(base_lr, factor, min_lr):
  # The float32 rate lands a few ulps from min_lr; that is no room for a cut.
  sim = Simulation(base_lr, monitor="val_accuracy", factor=factor, patience=1, min_lr=min_lr)
  cuts = sim.feed([0.5] * 40)
  needed = math.ceil(math.log(min_lr / base_lr) / math.log(factor) - 1e-9)
  assert len(cuts) == needed, cuts
  assert sim.lr == pytest.approx(min_lr, rel=1e-5)


def test_plateau_val_loss_mode_lower_is_better():
  sim = Simulation(monitor="val_loss", factor=0.5, patience=1)
  assert sim.feed([1.0, 0.9, 0.8, 0.7]) == []
  assert sim.feed([0.75]) == [1]
  # The same falling sequence is no improvement for an accuracy.
  accuracy = Simulation(monitor="val_accuracy", factor=0.5, patience=1)
  assert accuracy.feed([1.0, 0.9, 0.8, 0.7]) == [2, 3, 4]


def test_plateau_off_without_monitor():
  sim = Simulation(monitor="", patience=1)
  assert sim.plateau.update({"val_accuracy": 0.1}, 0.1) is False
  assert sim.feed([0.1] * 5) == []
  assert sim.lr == pytest.approx(0.1)


def test_plateau_state_survives_a_checkpoint(tmp_path):
  fields = dict(monitor="val_loss", factor=0.5, patience=2, cooldown=1)
  sim = Simulation(**fields)
  assert sim.feed([1.0, 0.8, 0.9, 0.9]) == [4]
  assert sim.feed([0.85]) == []  # Cooldown running: state worth keeping.
  path = tf.train.Checkpoint(plateau=sim.plateau).save(str(tmp_path / "ckpt"))

  restored = Simulation(**fields)
  tf.train.Checkpoint(plateau=restored.plateau).restore(path).assert_consumed()
  for name in ("scale", "best", "wait", "cooldown_left"):
    assert (getattr(restored.plateau, name).numpy() ==
            getattr(sim.plateau, name).numpy()), name
  assert restored.lr == pytest.approx(0.05)
  # Both continue identically.
  more = [0.9, 0.9, 0.9, 0.7, 0.9, 0.9]
  assert restored.feed(more) == sim.feed(more)
  assert restored.lr == pytest.approx(sim.lr)
