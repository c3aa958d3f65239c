"""The training loop: `train_and_evaluate(config)`.

An eager outer loop owns checkpoints, evaluation, summaries and the progress
bar; it calls the traced inner loop (step.make_train_loop) for at most
`steps_per_loop` steps at a time, never past an epoch end or a checkpoint
boundary. After each call it runs the loop actions (non-finite check,
summaries, progress, periodic checkpoint, SIGTERM); at each epoch end the
epoch actions (validation, reduce-on-plateau, best checkpoint, early
stopping, the epoch's checkpoint).
"""

import dataclasses
import math
import os
import platform
import sys
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import tfmnist
from tfmnist import hardware, run_dir
from tfmnist.data import augment as augment_lib
from tfmnist.data import pipeline, pixels, records
from tfmnist.errors import NonFiniteLoss
from tfmnist.models import batch_norm_statistics
from tfmnist.progress import Progress
from tfmnist.training import checkpoints as checkpoints_lib
from tfmnist.training import config as config_lib
from tfmnist.training import export, state, step as step_lib
from tfmnist.training import strategy as strategy_lib
from tfmnist.training import summaries


# ----------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class SetUp:
  """What a run needs before its first step: the strategy, the data and the run."""
  config: config_lib.TrainConfig  # With the precision resolved to a dtype policy.
  precision: dict  # {"requested", "policy", "reason"}, as manifest.json records it.
  strategy: tf.distribute.Strategy
  info: dict
  train_files: list
  shard_counts: list
  steps_per_epoch: int
  total_steps: int
  per_replica_batch_size: int
  val_examples: Optional[pipeline.Examples]  # None: the run has no validation.
  sample_examples: pipeline.Examples  # Build the model and show augmentation.
  run: state.Run


def set_up(config):
  """Seeds, precision, strategy, records and the run's objects.

  Raises:
    DataError: the records are missing or lack a split the config names, or
      model_dir holds another run (config.check_same_run).
    ValueError: a setting that cannot work (naming the field and value).
  """
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  config_lib.check_precision(config.precision)
  strategy = strategy_lib.create_strategy(config.strategy, config.num_virtual_devices,
                                          config.tpu)
  recorded = run_dir.RunDir(config.model_dir).read_manifest().get("precision")
  machine = hardware.detect(strategy)
  policy, reason = config_lib.resolve_precision(config.precision, recorded, machine)
  config_lib.check_trainable(config.precision, policy, machine)
  precision = {"requested": config.precision, "policy": policy, "reason": reason}
  config = dataclasses.replace(config, precision=policy)
  info = records.read_info(config.records_dir, config.dataset)
  config_lib.check_same_run(config, precision, info["class_names"])
  keras.mixed_precision.set_global_policy(policy)
  config_lib.check(config, info, strategy.num_replicas_in_sync)
  train_files, shard_counts = [], []
  for split in config.train_splits:
    train_files += records.split_files(config.records_dir, config.dataset, split)
    shard_counts += [s["count"] for s in info["splits"][split]["shards"]]
  steps_per_epoch = pipeline.pipeline_steps(shard_counts, config.global_batch_size,
                                            pipeline.num_input_pipelines(strategy),
                                            config.sharding)
  total_steps = int(math.ceil(config.epochs * steps_per_epoch))
  per_replica = config.global_batch_size // strategy.num_replicas_in_sync
  val_examples = None
  if config.validation_split:
    val_examples = pipeline.read_examples(
        records.split_files(config.records_dir, config.dataset, config.validation_split))
  samples = (val_examples if val_examples is not None else
             pipeline.read_examples(train_files[:1]))
  run = state.create_run(config, strategy, info["num_classes"], samples.image[:per_replica],
                         total_steps, steps_per_epoch)
  if config.recompute_bn_statistics and not batch_norm_statistics.batch_norm_layers(run.model):
    raise ValueError(f"recompute_bn_statistics: model {config.model!r} has no BatchNorm "
                     "layers to recompute")
  return SetUp(config, precision, strategy, info, train_files, shard_counts, steps_per_epoch,
               total_steps, per_replica, val_examples, samples, run)


def manifest(config, info, precision):
  """manifest.json: versions, machine, precision choice, classes, records and seed."""
  return {
      "tfmnist": tfmnist.__version__, "tensorflow": tf.__version__,
      "keras": keras.__version__, "numpy": np.__version__,
      "python": platform.python_version(), "command": " ".join(sys.argv),
      "cpu": hardware.describe_cpu(), "precision": precision, "seed": config.seed,
      "dataset": config.dataset, "records_dir": config.records_dir, "model": config.model,
      "class_names": list(info["class_names"]),
      "train_splits": list(config.train_splits),
      "records": {split: [{"file": s["file"], "sha256": s.get("sha256")}
                          for s in summary["shards"]]
                  for split, summary in info["splits"].items()},
  }


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


def train_and_evaluate(config, say=logging.info):
  """Trains, evaluates on the validation split every epoch, checkpoints and exports.

  Rerunning with the same model_dir resumes from the newest checkpoint.

  Args:
    config: TrainConfig.
    say: where one-line messages for the user go (resuming, validation
      results, SIGTERM); the command line passes print.

  Returns:
    dict of final metrics (also written to <model_dir>/metrics.json), with
    `train_seconds`: wall time of the call that trained the final steps, up to
    the final weights (set-up, tracing, steps, validation and checkpoints; not
    the export). A resumed run counts only its last call. A preempted run
    returns {"preempted": True, "step": step}.
  """
  started = time.perf_counter()
  setup = set_up(config)
  if setup.precision["requested"] == "auto":
    say(f"precision: {setup.precision['policy']} (auto: {setup.precision['reason']})")
  return _Loop(setup, say).run(started)


class _Loop:
  """The eager outer loop of one run and its loop and epoch actions."""

  def __init__(self, setup, say):
    self.setup, self.say = setup, say
    self.config, self.run_state = setup.config, setup.run
    strategy = setup.strategy
    self.is_chief = strategy_lib.is_chief(strategy)
    self.run_dir = run_dir.RunDir(self.config.model_dir)
    self.work_dir = self.run_dir.for_worker(self.is_chief, *strategy_lib.task(strategy))
    os.makedirs(self.work_dir.path, exist_ok=True)
    self.checkpoints = checkpoints_lib.Checkpoints(self.run_state.checkpoint, self.run_dir,
                                                   self.work_dir, self.is_chief,
                                                   self.config.keep_checkpoints)
    self.val_dataset = None
    if setup.val_examples is not None:
      self.val_dataset = pipeline.distribute_eval(strategy, setup.val_examples,
                                                  self.config.eval_batch_size)
    self.eval_fn = step_lib.make_eval_fn(self.run_state)
    self.writer = summaries.Writers(self.work_dir.logs, enabled=self.is_chief,
                                    validation=self.val_dataset is not None)

  def run(self, started):
    config, run, setup = self.config, self.run_state, self.setup
    restored = self.checkpoints.restore_latest(self.say)
    start_step = int(run.step.numpy())
    if restored:
      self.say(f"Resuming from {restored} at step {start_step} of {setup.total_steps}.")
    if self.is_chief:
      self.work_dir.write_run_files(
          config.flags_text, config_lib.to_dict(config),
          manifest(config, setup.info, setup.precision))
    dataset, _ = pipeline.distribute_train(setup.strategy, setup.train_files,
                                           setup.shard_counts, config.global_batch_size,
                                           config.seed, start_step, config.sharding)
    iterator = iter(dataset)
    train_loop = step_lib.make_train_loop(config, run, setup.per_replica_batch_size)
    if start_step == 0:
      samples = pixels.normalize(setup.sample_examples.image[:summaries.MAX_IMAGES])
      augmented = augment_lib.augment(samples, config.augment, config.seed, 0)
      self.writer.run_start(config, setup.info["dataset"], augmented.numpy())

    val_metrics, preempted = {}, False
    # A run that early stopping ended stays ended when its command is rerun.
    stopped_early = self._early_stop_reached()
    step, steps_per_epoch, total_steps = start_step, setup.steps_per_epoch, setup.total_steps
    with checkpoints_lib.Preemption(setup.strategy) as preemption:
      while step < total_steps and not stopped_early:
        epoch = step // steps_per_epoch
        epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
        bar = Progress(epoch_end - epoch * steps_per_epoch, "steps",
                       desc=f"epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}",
                       enabled=config.progress and self.is_chief)
        bar.done = step - epoch * steps_per_epoch
        run.train_loss.reset_state()
        run.train_accuracy.reset_state()
        while step < epoch_end:
          num_steps = min(config.steps_per_loop, epoch_end - step)
          if config.checkpoint_every_steps:
            num_steps = min(num_steps, config.checkpoint_every_steps -
                            step % config.checkpoint_every_steps)
          start = time.perf_counter()
          losses = train_loop(iterator, tf.constant(num_steps, tf.int32)).numpy()
          if run.weight_average is not None:
            run.weight_average.follow(run.model.variables, step + num_steps)
          step = self._after_loop(step, num_steps, losses, time.perf_counter() - start, bar)
          if preemption.should_stop():
            break
        # An epoch that ends here is evaluated even on SIGTERM: the resumed run
        # starts after it and would never evaluate it.
        if step % steps_per_epoch == 0 or step == total_steps:
          val_metrics, stopped_early = self._end_epoch(step)
        if preemption.stop and step < total_steps and not stopped_early:
          if step % steps_per_epoch:  # _end_epoch saved the epoch ends.
            self.checkpoints.save(step)
          preempted = True
          where = "" if preemption.requested else " on another worker"
          self.say(f"SIGTERM{where}: saved checkpoint at step {step}; rerun the same command "
                   "to resume.")
          break
    self.writer.flush()
    if preempted:
      self.run_dir.remove_worker_scratch(self.work_dir)
      return {"preempted": True, "step": step}
    return self._finish(step, start_step, val_metrics, stopped_early, started)

  def _early_stop_reached(self):
    patience = self.config.early_stopping_patience
    return bool(patience and int(self.run_state.stale_epochs.numpy()) >= patience)

  # Loop actions ------------------------------------------------------------

  def _after_loop(self, step, num_steps, losses, seconds, bar):
    """Non-finite check, summaries, progress and the periodic checkpoint; returns the step."""
    config, run = self.config, self.run_state
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      raise NonFiniteLoss(
          f"loss became {losses[bad[0]]} at step {step + bad[0] + 1}; stopped without "
          f"saving (the last good checkpoint is {self.checkpoints.latest.latest_checkpoint})")
    step += num_steps
    images_per_second = num_steps * config.global_batch_size / seconds
    loss, accuracy = float(run.train_loss.result()), float(run.train_accuracy.result())
    self.writer.train_loop(step, loss, accuracy, run.learning_rate, images_per_second,
                           seconds / num_steps)
    bar.update(num_steps, loss=loss, acc=accuracy, lr=run.learning_rate,
               img_s=int(images_per_second))
    if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
      self.checkpoints.save(step)
    return step

  # Epoch actions -----------------------------------------------------------

  def _end_epoch(self, step):
    """Validation, plateau, best checkpoint, early stopping and the epoch checkpoint.

    Returns:
      (validation metrics or {}, whether early stopping ends the run).
    """
    run = self.run_state
    if self.val_dataset is None:
      self.checkpoints.save(step)
      self.say(f"step {step}: checkpoint saved (no validation split)")
      return {}, False
    with checkpoints_lib.EmaWeights(run.model, run.weight_average):
      metrics, wrong = step_lib.evaluate(run, self.eval_fn, self.val_dataset)
    if run.plateau.update({"val_accuracy": metrics["accuracy"], "val_loss": metrics["loss"]},
                          run.learning_rate):
      self.say(f"reduce-on-plateau: learning rate now {run.learning_rate:.3g}")
    # Compared as the float32 best_accuracy keeps it, so an unchanged accuracy
    # is never an improvement.
    accuracy = float(np.float32(metrics["accuracy"]))
    improved = accuracy > float(run.best_accuracy.numpy())
    if improved:
      run.best_accuracy.assign(accuracy)
      run.stale_epochs.assign(0)
    else:
      run.stale_epochs.assign_add(1)
    stop = self._early_stop_reached()
    self.writer.validation(step, metrics, wrong, self.setup.val_examples,
                           self.setup.info["class_names"])
    self.checkpoints.save(step)
    if improved:
      self.checkpoints.save_best(step)
    self.say(f"step {step}: val_loss={metrics['loss']:.4f} "
             f"val_accuracy={metrics['accuracy']:.4%}"
             f"{' (best)' if improved else ''}{'; early stop' if stop else ''}")
    return metrics, stop

  # The end ---------------------------------------------------------------

  def _recompute_bn_statistics(self, step):
    """The final weights' BatchNorm statistics measured at inference, saved at `step`.

    Measured on a float32 copy of the weights that evaluation and the export
    use (the weight average when the run keeps one) over the training splits
    as stored, then written back. Measuring a layer needs only the layers
    before it, so a rerun of a finished run measures the same values again.
    """
    config, run, setup = self.config, self.run_state, self.setup
    started = time.perf_counter()
    images = pipeline.read_examples(setup.train_files).image
    bar = None
    with checkpoints_lib.EmaWeights(run.model, run.weight_average):
      copy = export.float32_copy(run.model, config.model, setup.info["num_classes"])

      def on_layer(done, total):
        nonlocal bar
        if bar is None:
          bar = Progress(total, "layers", desc="BatchNorm statistics",
                         enabled=config.progress and self.is_chief)
        bar.update(done - bar.done)

      count = batch_norm_statistics.recompute(copy, images, config.eval_batch_size, on_layer)
      run.model.set_weights(copy.get_weights())
      if run.weight_average is not None:  # What the context restores is the raw weights.
        run.weight_average.copy_from(run.model.variables)
    self.checkpoints.save(step)
    self.say(f"step {step}: BatchNorm statistics of {count} layers recomputed over "
             f"{len(images):,} training images in {time.perf_counter() - started:.0f} s")

  def _finish(self, step, start_step, val_metrics, stopped_early, started):
    """Final validation (for a rerun), the export and metrics.json."""
    config, run = self.config, self.run_state
    if config.recompute_bn_statistics:
      self._recompute_bn_statistics(step)
      val_metrics = {}  # Taken with the statistics before: validate again.
    if not val_metrics and self.val_dataset is not None:  # Nothing was left to train.
      with checkpoints_lib.EmaWeights(run.model, run.weight_average):
        val_metrics, _ = step_lib.evaluate(run, self.eval_fn, self.val_dataset)
    seconds = time.perf_counter() - started
    if step == start_step:  # A rerun that trained nothing keeps the time of the run's training.
      seconds = self.run_dir.read_metrics().get("train_seconds", seconds)
    final = {"step": step, "epochs": step / self.setup.steps_per_epoch,
             "stopped_early": stopped_early, "train_seconds": seconds,
             **{f"val_{k}": v for k, v in val_metrics.items()}}
    if self.is_chief:
      if config.export:
        class_names = self.setup.info["class_names"]
        with checkpoints_lib.EmaWeights(run.model, run.weight_average):
          export.export(export.float32_twin(run.model, config.model, len(class_names)),
                        class_names, config_lib.export_dir_of(config))
      self.run_dir.write_metrics(final)
      self.writer.hparams_end(config, final)
    self.run_dir.remove_worker_scratch(self.work_dir)
    return final
