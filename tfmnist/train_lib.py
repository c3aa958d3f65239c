"""The training loop: `train_and_evaluate(config)`.

An eager outer loop owns checkpoints, evaluation, summaries and the progress
bar; it calls a traced inner loop that runs `steps` train steps per call with
`strategy.run` (the loop count is a tensor, so it never retraces).
"""

import dataclasses
import json
import math
import os
import signal
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import tfmnist
from tfmnist import augment as augment_lib
from tfmnist import data, export, hardware, models, optim, records, schedules, summaries
from tfmnist.errors import DataError
from tfmnist.models.layers import Noise
from tfmnist.progress import Progress

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


class NonFiniteLoss(RuntimeError):
  """The loss became NaN or infinite; the message names the step."""


@dataclasses.dataclass
class TrainConfig:
  """Everything a run needs; built once by the entry point from its flags.

  Durations are in epochs here (as users think of them) and are turned into
  steps once, when the steps per epoch are known.
  """
  model_dir: str
  dataset: str = "mnist"
  records_dir: str = "records"
  source_dir: str = ""  # Local files to prepare missing records from.
  model: str = "lenet"
  epochs: float = 15
  global_batch_size: int = 128
  eval_batch_size: int = 1000
  strategy: str = "default"
  num_virtual_devices: int = 0
  tpu: str = ""
  deterministic: bool = False
  seed: int = 0
  optimizer: optim.OptimizerConfig = dataclasses.field(default_factory=optim.OptimizerConfig)
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_epochs: float = 0.0
  decay_epochs: float = 1.0
  decay_rate: float = 0.1
  final_lr_fraction: float = 0.0
  plateau: schedules.PlateauConfig = dataclasses.field(default_factory=schedules.PlateauConfig)
  label_smoothing: float = 0.0
  clip_norm: float = 0.0
  precision: str = "float32"  # A Keras dtype policy, or "auto" (hardware.choose_precision).
  steps_per_loop: int = 50
  checkpoint_every_steps: int = 0
  keep_checkpoints: int = 3
  early_stopping_patience: int = 0
  augment: augment_lib.AugmentConfig = dataclasses.field(
      default_factory=augment_lib.AugmentConfig)
  sharding: str = "auto"
  train_splits: tuple = ("train",)
  validation_split: str = "validation"  # Empty: no validation.
  export: bool = True
  export_dir: str = ""  # Empty: <model_dir>/export.
  progress: bool = True
  flags_text: str = ""  # The flags of the run, saved as flags.txt and in TensorBoard.


# ----------------------------------------------------------------------------
# Strategy
# ----------------------------------------------------------------------------


def create_strategy(config):
  """The tf.distribute strategy named by `config.strategy`."""
  if config.num_virtual_devices > 1:
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * config.num_virtual_devices)
  name = config.strategy
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    devices = None
    if not tf.config.list_logical_devices("GPU"):
      devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def resolve_precision(config, strategy):
  """(dtype policy, reason) of the run.

  "auto" is decided once per run folder: a run that resumes keeps the policy
  its first start chose (recorded in manifest.json), so that it ends where an
  uninterrupted run would even on another machine.
  """
  if config.precision != "auto":
    return config.precision, "as configured"
  recorded = summaries.read_manifest(config.model_dir).get("precision")
  if recorded and recorded.get("requested") == "auto" and recorded.get("policy") in PRECISIONS:
    return recorded["policy"], f"chosen when the run started: {recorded.get('reason', '')}"
  return hardware.choose_precision(hardware.detect(strategy))


# ----------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------


def ensure_records(config):
  """info.json of the dataset, preparing the records first when they are missing."""
  try:
    return records.read_info(config.records_dir, config.dataset)
  except DataError:
    pass
  from tfmnist import prepare  # pylint: disable=g-import-not-at-top
  print(f"Records of {config.dataset} not found in {config.records_dir}/; preparing them "
        f"with make_records{' from ' + config.source_dir if config.source_dir else ''}.")
  try:
    prepare.make_records(prepare.PrepareConfig(
        dataset=config.dataset, source_dir=config.source_dir,
        output_dir=config.records_dir, show_progress=config.progress))
  except DataError as e:
    try:  # Another worker of the cluster may have prepared them meanwhile.
      info = records.read_info(config.records_dir, config.dataset)
    except DataError:
      raise DataError(
          f"no records for {config.dataset} and they could not be prepared ({e}); run "
          f"`python tools/make_records.py --dataset={config.dataset} "
          f"--output_dir={config.records_dir}` with a --source_dir or --train_csv of local "
          "files") from None
    print(f"Using the records of {config.dataset} that another process prepared.")
    return info
  return records.read_info(config.records_dir, config.dataset)


# ----------------------------------------------------------------------------
# Run state
# ----------------------------------------------------------------------------


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


def create_run(config, strategy, info, sample_images, total_steps, steps_per_epoch):
  """Builds model, optimizer, metrics and checkpoint inside the strategy scope."""
  schedule_config = schedules.ScheduleConfig(
      name=config.schedule, base_lr=config.learning_rate, total_steps=total_steps,
      warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
      decay_steps=max(1, int(round(config.decay_epochs * steps_per_epoch))),
      decay_rate=config.decay_rate, final_lr_fraction=config.final_lr_fraction)
  with strategy.scope():
    model = models.create(config.model, info["num_classes"])
    # Keras 3 builds a subclassed model only when called on real data.
    model(data.normalize(sample_images), training=False)
    plateau = schedules.Plateau(config.plateau)
    optimizer = optim.create(config.optimizer,
                             schedules.ScaledSchedule(schedule_config, plateau.scale),
                             loss_scaling=config.precision == "mixed_float16")
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    best_accuracy = tf.Variable(-1.0, trainable=False, name="best_accuracy")
    stale_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="stale_epochs")
    train_loss = keras.metrics.Mean("loss")
    train_accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
    weight_average = None
    saved = dict(model=model, optimizer=optimizer, plateau=plateau, step=step,
                 best_accuracy=best_accuracy, stale_epochs=stale_epochs)
    if config.optimizer.ema_decay > 0:
      weight_average = optim.WeightAverage(model.variables, config.optimizer.ema_decay)
      saved["weight_average"] = weight_average
    checkpoint = tf.train.Checkpoint(**saved)
  return Run(strategy, model, optimizer, plateau, step, best_accuracy, stale_epochs,
             train_loss, train_accuracy, checkpoint, weight_average)


def current_lr(run):
  return float(run.optimizer.learning_rate.numpy())


# ----------------------------------------------------------------------------
# Update step
# ----------------------------------------------------------------------------


def make_train_loop(config, run, per_replica_batch_size):
  """The traced inner loop: `loop(iterator, num_steps)` -> losses of each step."""
  strategy, model, optimizer = run.strategy, run.model, run.optimizer
  global_batch = config.global_batch_size
  loss_scaling = config.precision == "mixed_float16"

  def clip(grads):
    # The clip factor comes from the norm of the summed gradient, which is
    # what one replica would clip on; the optimizer then sums the scaled
    # per-replica gradients.
    context = tf.distribute.get_replica_context()
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    norm = tf.linalg.global_norm(total)
    if loss_scaling:
      # The gradients are loss-scaled until the optimizer divides them: clip
      # on the true norm. An overflow (inf norm) gives NaN gradients, which
      # the LossScaleOptimizer skips while it lowers the scale.
      norm = norm / tf.cast(optimizer.dynamic_scale, norm.dtype)
    factor = tf.minimum(1.0, config.clip_norm / tf.maximum(norm, 1e-12))
    return [g * factor for g in grads]

  def train_step(batch, step):
    """One update; runs in replica context."""
    # Multi-worker input leaves the batch dimension unknown (it allows for a
    # short last batch, which this pipeline never has); augmentation and the
    # noise take this replica's rows of the global draws by the static size.
    batch = tf.nest.map_structure(
        lambda t: tf.ensure_shape(t, [per_replica_batch_size] + t.shape[1:].as_list()), batch)
    context = tf.distribute.get_replica_context()
    offset = context.replica_id_in_sync_group * per_replica_batch_size
    images, labels = augment_lib.training_inputs(batch, config.augment, config.seed, step,
                                                 offset, global_batch)
    noise = Noise(tf.random.experimental.stateless_fold_in(
        tf.constant([config.seed, 0x5EED], tf.int64), step), offset, global_batch)
    with tf.GradientTape() as tape:
      logits = model(images, training=True, noise=noise)
      depth = logits.shape[-1]
      targets = tf.one_hot(labels, depth)
      if config.label_smoothing:
        targets = targets * (1 - config.label_smoothing) + config.label_smoothing / depth
      per_example = tf.nn.softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))
      # Average over the global batch: the optimizer sums the replicas' gradients.
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
      scaled = optimizer.scale_loss(loss) if loss_scaling else loss
    grads = tape.gradient(scaled, model.trainable_variables)
    if config.clip_norm:
      grads = clip(grads)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    if run.weight_average is not None:
      run.weight_average.update(model.variables)
    run.train_loss.update_state(per_example)
    run.train_accuracy.update_state(labels, logits)
    return loss

  @tf.function
  def train_loop(iterator, num_steps):
    """Runs `num_steps` steps; cross-replica context. Returns each step's loss."""
    losses = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      per_replica = strategy.run(train_step, args=(next(iterator), run.step.read_value()))
      losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, None))
      run.step.assign_add(1)
    return losses.stack()

  return train_loop


def make_eval_fn(run):
  """Traced evaluation step over one distributed batch; cross-replica context."""
  strategy, model = run.strategy, run.model

  def eval_step(batch):
    logits = tf.cast(model(data.normalize(batch["image"]), training=False), tf.float32)
    mask = batch["mask"]
    labels = tf.maximum(batch["label"], 0)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    predictions = tf.argmax(logits, -1, output_type=tf.int32)
    correct = tf.cast(tf.equal(predictions, batch["label"]), tf.float32)
    sums = tf.stack([tf.reduce_sum(per_example * mask), tf.reduce_sum(correct * mask),
                     tf.reduce_sum(mask)])
    return sums, predictions, batch["label"], batch["index"], mask

  @tf.function
  def eval_batch(batch):
    sums, predictions, labels, index, mask = strategy.run(eval_step, args=(batch,))
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, sums, None),
            strategy.gather(predictions, 0), strategy.gather(labels, 0),
            strategy.gather(index, 0), strategy.gather(mask, 0))

  return eval_batch


def evaluate(run, eval_fn, dataset):
  """Loss, accuracy and the mistakes over a distributed eval dataset.

  Returns:
    ({"loss", "accuracy", "count"}, {"index", "label", "prediction"} of mistakes)
  """
  totals = np.zeros(3)
  wrong = {"index": [], "label": [], "prediction": []}
  for batch in dataset:
    sums, predictions, labels, index, mask = eval_fn(batch)
    totals += sums.numpy()
    keep = (mask.numpy() > 0) & (predictions.numpy() != labels.numpy())
    wrong["index"].append(index.numpy()[keep])
    wrong["label"].append(labels.numpy()[keep])
    wrong["prediction"].append(predictions.numpy()[keep])
  loss_sum, correct, count = totals
  metrics = {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1),
             "count": int(count)}
  return metrics, {k: np.concatenate(v) for k, v in wrong.items()}


class EmaWeights:
  """Context that swaps the weight average in (evaluation, export) and back.

  Every model variable is swapped, BatchNorm statistics included (see
  optim.WeightAverage). A no-op for a run that keeps no average
  (--ema_decay=0).
  """

  def __init__(self, run):
    self.run = run
    self.saved = None

  def __enter__(self):
    if self.run.weight_average is not None:
      variables = self.run.model.variables
      self.saved = [tf.identity(v) for v in variables]
      for variable, average in zip(variables, self.run.weight_average.averages):
        variable.assign(average)
    return self

  def __exit__(self, *exc):
    if self.saved is not None:
      for variable, value in zip(self.run.model.variables, self.saved):
        variable.assign(value)
      self.saved = None


# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------


# What a damaged or mismatched checkpoint raises on restore. A truncated data
# file surfaces as IndexError ("Read less bytes than requested") from the
# checkpoint reader, not as a tf.errors.OpError.
_RESTORE_ERRORS = (tf.errors.OpError, AssertionError, ValueError, IndexError)


def restore_latest(manager, checkpoint):
  """Restores the newest readable checkpoint, falling back past damaged ones.

  Returns:
    The path restored, or None for a fresh start (no checkpoint yet).

  Raises:
    DataError: there are checkpoints but none of them can be read.
  """
  damaged = []
  for path in reversed(manager.checkpoints):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
      return path
    except _RESTORE_ERRORS as e:
      reason = str(e).splitlines()[0]
      logging.warning("Checkpoint %s is damaged (%s); trying the previous one", path, reason)
      print(f"warning: checkpoint {path} is damaged; falling back to the previous one")
      damaged.append(f"{path} ({reason})")
  if damaged:
    # The failed restores may have set some variables already, and starting
    # over would silently throw the run away: the user decides.
    raise DataError(f"no readable checkpoint: {'; '.join(damaged)}; move the damaged files "
                    "away to resume from an older one, or the folder to start again")
  return None


class SaveError(RuntimeError):
  """A checkpoint could not be written (e.g. the disk is full); the message names it."""


def save_checkpoint(manager, step):
  """manager.save(step); a failed write raises SaveError naming the last good checkpoint.

  The checkpoint's files are complete before its name goes into the folder's
  `checkpoint` state file (TensorFlow writes that one atomically), so after a
  failed write the state file still lists only good checkpoints.
  """
  try:
    return manager.save(checkpoint_number=step)
  except (OSError, tf.errors.ResourceExhaustedError) as e:
    reason = (e.strerror or str(e)) if isinstance(e, OSError) else e.message
    raise SaveError(f"could not write checkpoint {manager.directory}/ckpt-{step} "
                    f"({str(reason).splitlines()[0]}); the last good checkpoint is "
                    f"{manager.latest_checkpoint}, which a rerun resumes from") from e


class Preemption:
  """Turns SIGTERM into a request to checkpoint and stop at the next loop boundary.

  With several workers the decision is collective: the workers get the signal
  at slightly different times, and one that ran another loop alone would wait
  forever in its all-reduce while the chief stopped. So at every loop boundary
  the workers sum their requests (`should_stop`), and all stop after the same
  step when any one of them was signalled.
  """

  def __init__(self, strategy=None):
    self.requested = False  # This process got SIGTERM.
    self.stop = False  # The workers agreed to stop (the last `should_stop`).
    self._previous = None
    self._count_requests = None
    if strategy is not None and data.num_input_pipelines(strategy) > 1:
      self._count_requests = _make_request_count(strategy)

  def should_stop(self):
    """Whether to stop after this loop; the same answer on every worker."""
    if self._count_requests is None:
      self.stop = self.requested
    else:
      self.stop = int(self._count_requests(tf.constant(int(self.requested)))) > 0
    return self.stop

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _make_request_count(strategy):
  """Traced sum over all replicas of each one's stop request (0 or 1)."""

  @tf.function
  def count(requested):
    per_replica = strategy.run(lambda: tf.identity(requested))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  return count


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


def _check_config(config, info, strategy):
  replicas = strategy.num_replicas_in_sync
  if config.global_batch_size % replicas:
    raise ValueError(f"global batch size {config.global_batch_size} does not divide among "
                     f"{replicas} replicas")
  if config.eval_batch_size % replicas:
    raise ValueError(f"eval batch size {config.eval_batch_size} does not divide among "
                     f"{replicas} replicas")
  augment_lib.validate(config.augment, info["digits"])
  for split in (*config.train_splits, config.validation_split):
    if split and split not in info["splits"]:
      hint = "; make the records with --validation_size" if split == "validation" else ""
      raise DataError(f"{config.dataset} has no {split!r} split (has "
                      f"{', '.join(info['splits'])}){hint}")
  if not config.train_splits:
    raise ValueError("--train_splits is empty; name the splits to train on")
  if config.validation_split in config.train_splits:
    raise ValueError(f"--validation_split={config.validation_split} is also in --train_splits; "
                     "pass --validation_split= to train without validation")
  if not config.validation_split:
    needs = [name for name, used in (("--plateau_monitor", config.plateau.monitor),
                                     ("--early_stopping_patience",
                                      config.early_stopping_patience)) if used]
    if needs:
      several = len(needs) > 1
      raise ValueError(f"{' and '.join(needs)} need{'' if several else 's'} a validation split; "
                       f"drop {'them' if several else 'it'} or pass --validation_split")


@dataclasses.dataclass
class SetUp:
  """What training and exporting share: the strategy, the data and the run."""
  config: TrainConfig  # With the precision resolved to a dtype policy.
  precision: dict  # {"requested", "policy", "reason"}, as manifest.json records it.
  strategy: tf.distribute.Strategy
  info: dict
  train_files: list
  shard_counts: list
  steps_per_epoch: int
  total_steps: int
  per_replica_batch_size: int
  val_examples: Optional[data.Examples]  # None: the run has no validation.
  sample_examples: data.Examples  # Build the model and show augmentation.
  run: Run


def _set_up(config):
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  if config.precision not in PRECISIONS:
    raise ValueError(f"unknown precision {config.precision!r}; choose one of "
                     f"{', '.join(PRECISIONS)}")
  strategy = create_strategy(config)
  policy, reason = resolve_precision(config, strategy)
  precision = {"requested": config.precision, "policy": policy, "reason": reason}
  config = dataclasses.replace(config, precision=policy)
  keras.mixed_precision.set_global_policy(policy)
  info = ensure_records(config)
  _check_config(config, info, strategy)
  train_files, shard_counts = [], []
  for split in config.train_splits:
    train_files += records.split_files(config.records_dir, config.dataset, split)
    shard_counts += [s["count"] for s in info["splits"][split]["shards"]]
  steps_per_epoch = data.pipeline_steps(shard_counts, config.global_batch_size,
                                        data.num_input_pipelines(strategy), config.sharding)
  total_steps = int(math.ceil(config.epochs * steps_per_epoch))
  per_replica = config.global_batch_size // strategy.num_replicas_in_sync
  val_examples = None
  if config.validation_split:
    val_examples = data.read_examples(
        records.split_files(config.records_dir, config.dataset, config.validation_split))
  samples = (val_examples if val_examples is not None else
             data.read_examples(train_files[:1]))
  run = create_run(config, strategy, info, samples.image[:per_replica], total_steps,
                   steps_per_epoch)
  return SetUp(config, precision, strategy, info, train_files, shard_counts, steps_per_epoch,
               total_steps, per_replica, val_examples, samples, run)


def export_dir_of(config):
  return config.export_dir or export.run_export_dir(config.model_dir)


def export_checkpoint(config, checkpoint):
  """Exports one checkpoint of the run as a SavedModel (EMA weights when used).

  Args:
    config: the run's TrainConfig (e.g. from its flags.txt).
    checkpoint: "latest", "best", or a checkpoint path.

  Returns:
    The checkpoint path exported.

  Raises:
    DataError: the run has no such checkpoint, or it cannot be read.
  """
  folders = {"latest": "checkpoints", "best": "best"}
  if checkpoint in folders:
    folder = os.path.join(config.model_dir, folders[checkpoint])
    path = tf.train.latest_checkpoint(folder)
    if path is None:
      raise DataError(f"{folder}: no checkpoint to export")
  else:
    path = checkpoint
    if not tf.io.gfile.exists(path + ".index"):
      raise DataError(f"{path}: no such checkpoint (expected {path}.index)")
  setup = _set_up(config)
  try:
    setup.run.checkpoint.restore(path).assert_existing_objects_matched()
  except _RESTORE_ERRORS as e:
    raise DataError(f"{path}: cannot restore this run's model from it "
                    f"({str(e).splitlines()[0]})") from None
  with EmaWeights(setup.run):
    export.export(setup.run.model, setup.info["class_names"], export_dir_of(setup.config))
  return path


def train_and_evaluate(config):
  """Trains, evaluates on the validation split every epoch, checkpoints and exports.

  Rerunning with the same model_dir resumes from the newest checkpoint.

  Returns:
    dict of final metrics (also written to <model_dir>/metrics.json), with
    `train_seconds`: wall time of the call that trained the final steps, up to
    the final weights (set-up, tracing, steps, validation and checkpoints; not
    the export). A resumed run counts only its last call.
  """
  started = time.perf_counter()
  setup = _set_up(config)
  config, strategy, info, run = setup.config, setup.strategy, setup.info, setup.run
  if setup.precision["requested"] == "auto":
    print(f"precision: {setup.precision['policy']} (auto: {setup.precision['reason']})")
  train_files, shard_counts = setup.train_files, setup.shard_counts
  steps_per_epoch, total_steps = setup.steps_per_epoch, setup.total_steps
  per_replica, val_examples = setup.per_replica_batch_size, setup.val_examples
  is_chief = summaries.is_chief(strategy)
  work_dir = summaries.worker_dir(config.model_dir, strategy)
  os.makedirs(work_dir, exist_ok=True)

  manager = tf.train.CheckpointManager(run.checkpoint, os.path.join(work_dir, "checkpoints"),
                                       max_to_keep=config.keep_checkpoints)
  best_manager = tf.train.CheckpointManager(run.checkpoint, os.path.join(work_dir, "best"),
                                            max_to_keep=1, checkpoint_name="best")
  # Every worker restores what the chief saved; non-chief copies are scratch.
  restored = restore_latest(
      manager if is_chief else tf.train.CheckpointManager(
          run.checkpoint, os.path.join(config.model_dir, "checkpoints"), max_to_keep=None),
      run.checkpoint)
  start_step = int(run.step.numpy())
  if restored:
    print(f"Resuming from {restored} at step {start_step} of {total_steps}.")
  if is_chief:
    summaries.write_run_files(config, info, work_dir, setup.precision)

  dataset, _ = data.distribute_train(strategy, train_files, shard_counts,
                                     config.global_batch_size, config.seed, start_step,
                                     config.sharding)
  val_dataset = None
  if val_examples is not None:
    val_dataset = data.distribute_eval(strategy, val_examples, config.eval_batch_size)
  iterator = iter(dataset)
  train_loop = make_train_loop(config, run, per_replica)
  eval_fn = make_eval_fn(run)
  writer = summaries.Writers(os.path.join(work_dir, "logs"), enabled=is_chief,
                             validation=val_dataset is not None)
  if start_step == 0:
    writer.run_start(config, info, setup.sample_examples)

  val_metrics, preempted = {}, False
  # A run that early stopping ended stays ended when its command is rerun.
  stopped_early = bool(config.early_stopping_patience and
                       int(run.stale_epochs.numpy()) >= config.early_stopping_patience)
  step = start_step
  with Preemption(strategy) as preemption:
    while step < total_steps and not stopped_early:
      epoch = step // steps_per_epoch
      epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
      bar = Progress(epoch_end - epoch * steps_per_epoch, "steps",
                     desc=f"epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}",
                     enabled=config.progress and is_chief)
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
        seconds = time.perf_counter() - start
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
          raise NonFiniteLoss(
              f"loss became {losses[bad[0]]} at step {step + bad[0] + 1}; stopped without "
              f"saving (the last good checkpoint is {manager.latest_checkpoint})")
        step += num_steps
        images_per_second = num_steps * config.global_batch_size / seconds
        writer.train_loop(step, float(run.train_loss.result()),
                          float(run.train_accuracy.result()), current_lr(run),
                          images_per_second, seconds / num_steps)
        bar.update(num_steps, loss=float(run.train_loss.result()),
                   acc=float(run.train_accuracy.result()), lr=current_lr(run),
                   img_s=int(images_per_second))
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
          save_checkpoint(manager, step)
        if preemption.should_stop():
          break
      # An epoch that ends here is evaluated even on SIGTERM: the resumed run
      # starts after it and would never evaluate it.
      if step % steps_per_epoch == 0 or step == total_steps:
        val_metrics, stopped_early = _end_epoch(config, run, eval_fn, val_dataset, val_examples,
                                                info, writer, manager, best_manager, step)
      if preemption.stop and step < total_steps and not stopped_early:
        if step % steps_per_epoch:  # _end_epoch saved the epoch ends.
          save_checkpoint(manager, step)
        preempted = True
        where = "" if preemption.requested else " on another worker"
        print(f"SIGTERM{where}: saved checkpoint at step {step}; rerun the same command to "
              "resume.")
        break
  writer.flush()
  if preempted:
    summaries.cleanup_worker_dir(work_dir, config.model_dir)
    return {"preempted": True, "step": step}
  # Nothing was left to train (a rerun of a finished run).
  if not val_metrics and val_dataset is not None:
    with EmaWeights(run):
      val_metrics, _ = evaluate(run, eval_fn, val_dataset)
  seconds = time.perf_counter() - started
  if step == start_step:  # A rerun that trained nothing keeps the time of the run's training.
    seconds = _read_metrics(config.model_dir).get("train_seconds", seconds)
  final = {"step": step, "epochs": step / steps_per_epoch, "stopped_early": stopped_early,
           "train_seconds": seconds, **{f"val_{k}": v for k, v in val_metrics.items()}}
  if is_chief:
    if config.export:
      with EmaWeights(run):
        export.export(run.model, info["class_names"], export_dir_of(config))
    records.write_text_atomically(os.path.join(config.model_dir, "metrics.json"),
                                  json.dumps(final, indent=1))
    writer.hparams_end(config, final)
  summaries.cleanup_worker_dir(work_dir, config.model_dir)
  return final


def _read_metrics(model_dir):
  """The run's metrics.json, or {} when it has none (yet) or it is unreadable."""
  try:
    with open(os.path.join(model_dir, "metrics.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _end_epoch(config, run, eval_fn, val_dataset, val_examples, info, writer, manager,
               best_manager, step):
  """Validation, plateau, best checkpoint, early stopping and the epoch checkpoint."""
  if val_dataset is None:
    save_checkpoint(manager, step)
    print(f"step {step}: checkpoint saved (no validation split)")
    return {}, False
  with EmaWeights(run):
    metrics, wrong = evaluate(run, eval_fn, val_dataset)
  reduced = run.plateau.update({"val_accuracy": metrics["accuracy"],
                                "val_loss": metrics["loss"]}, current_lr(run))
  if reduced:
    print(f"reduce-on-plateau: learning rate now {current_lr(run):.3g}")
  # Compared as the float32 best_accuracy keeps it, so an unchanged accuracy
  # is never an improvement.
  accuracy = float(np.float32(metrics["accuracy"]))
  improved = accuracy > float(run.best_accuracy.numpy())
  if improved:
    run.best_accuracy.assign(accuracy)
    run.stale_epochs.assign(0)
  else:
    run.stale_epochs.assign_add(1)
  stop = bool(config.early_stopping_patience and
              int(run.stale_epochs.numpy()) >= config.early_stopping_patience)
  writer.validation(step, metrics, wrong, val_examples, info["class_names"])
  save_checkpoint(manager, step)
  if improved:
    save_checkpoint(best_manager, step)
  print(f"step {step}: val_loss={metrics['loss']:.4f} val_accuracy={metrics['accuracy']:.4%}"
        f"{' (best)' if improved else ''}{'; early stop' if stop else ''}")
  return metrics, stop
