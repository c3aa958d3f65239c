"""Checkpoints of a run: where they go, restoring past damaged ones, saving, SIGTERM,
and the weight-average swap for evaluation and export.

One `Checkpoints` object owns the run's two CheckpointManagers: the newest
`keep` checkpoints in checkpoints/, and the best by validation accuracy in
best/. Every worker restores what the chief saved; a non-chief writes its
copies into its scratch folder (MultiWorkerMirroredStrategy needs every
worker to take part in a save).
"""

import signal

import tensorflow as tf
from absl import logging

from tfmnist.data import pipeline
from tfmnist.errors import DataError, SaveError

# What a damaged or mismatched checkpoint raises on restore. A truncated data
# file surfaces as IndexError ("Read less bytes than requested") from the
# checkpoint reader, not as a tf.errors.OpError.
RESTORE_ERRORS = (tf.errors.OpError, AssertionError, ValueError, IndexError)


class Checkpoints:
  """The run's checkpoint folders and managers.

  Args:
    checkpoint: the run's tf.train.Checkpoint.
    run_dir: the run folder (RunDir) the chief reads and writes.
    work_dir: this worker's folder (run_dir on the chief, a scratch folder elsewhere).
    is_chief: whether this worker is the chief.
    keep: newest checkpoints kept in checkpoints/.
  """

  def __init__(self, checkpoint, run_dir, work_dir, is_chief, keep):
    self.checkpoint = checkpoint
    self.latest = tf.train.CheckpointManager(checkpoint, work_dir.checkpoints, max_to_keep=keep)
    self.best = tf.train.CheckpointManager(checkpoint, work_dir.best, max_to_keep=1,
                                           checkpoint_name="best")
    # Every worker restores what the chief saved; non-chief copies are scratch.
    self._restore_from = self.latest if is_chief else tf.train.CheckpointManager(
        checkpoint, run_dir.checkpoints, max_to_keep=None)

  def restore_latest(self, say=logging.warning):
    """Restores the newest readable checkpoint; see `restore_latest`."""
    return restore_latest(self._restore_from, self.checkpoint, say)

  def save(self, step):
    return save_checkpoint(self.latest, step)

  def save_best(self, step):
    return save_checkpoint(self.best, step)


def restore_latest(manager, checkpoint, say=logging.warning):
  """Restores the newest readable checkpoint, falling back past damaged ones.

  Args:
    manager: the CheckpointManager whose checkpoints are tried, newest first.
    checkpoint: the tf.train.Checkpoint to restore into.
    say: where the warning about a damaged checkpoint goes (one line each,
      with the reason).

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
    except RESTORE_ERRORS as e:
      reason = str(e).splitlines()[0]
      say(f"warning: checkpoint {path} is damaged ({reason}); falling back to the previous one")
      damaged.append(f"{path} ({reason})")
  if damaged:
    # The failed restores may have set some variables already, and starting
    # over would silently throw the run away: the user decides.
    raise DataError(f"no readable checkpoint: {'; '.join(damaged)}; move the damaged files "
                    "away to resume from an older one, or the folder to start again")
  return None


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

  TensorFlow's PreemptionCheckpointHandler does this for clusters, but it
  serves only MultiWorkerMirroredStrategy and TPUStrategy (not the default or
  mirrored strategies most runs use), restores the latest checkpoint itself
  (this loop falls back past damaged ones), and exits the process from inside
  its save, before the loop can validate an epoch that ends at the signal.
  """

  def __init__(self, strategy=None):
    self.requested = False  # This process got SIGTERM.
    self.stop = False  # The workers agreed to stop (the last `should_stop`).
    self._previous = None
    self._count_requests = None
    if strategy is not None and pipeline.num_input_pipelines(strategy) > 1:
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

  @tf.function(autograph=False)
  def count(requested):
    per_replica = strategy.run(lambda: tf.identity(requested))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  return count


class EmaWeights:
  """Context that swaps the weight average in (evaluation, export) and back.

  Every model variable is swapped, BatchNorm statistics included (see
  optim.WeightAverage). A no-op without an average (no EMA, no SWA).

  Args:
    model: the Keras model.
    weight_average: its optim.WeightAverage, or None.
  """

  def __init__(self, model, weight_average):
    self.model = model
    self.weight_average = weight_average
    self.saved = None

  def __enter__(self):
    if self.weight_average is not None:
      variables = self.model.variables
      self.saved = [tf.identity(v) for v in variables]
      self.weight_average.copy_to(variables)
    return self

  def __exit__(self, *exc):
    if self.saved is not None:
      for variable, value in zip(self.model.variables, self.saved):
        variable.assign(value)
      self.saved = None
