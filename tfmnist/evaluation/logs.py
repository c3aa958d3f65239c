"""The scalars a run wrote to TensorBoard, read back: `read_scalars`.

The evaluation report draws the training curves from them. TensorBoard's
own reader is used, so the curves show what TensorBoard shows.
"""

import os

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

# 0 keeps every event: the default guidance samples 10,000 scalars and only 10
# tensors per tag, and TF2 writes its scalars as tensors.
_KEEP_ALL = {event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
_RUNS = ("train", "validation")


def _scalar_events(folder):
  """{tag: [(step, wall_time, value)]} of the scalar summaries in one run's folder."""
  # Purging would drop events by TensorBoard's own guess at restarts; the
  # caller's rule for rewritten steps (latest write wins) is applied instead.
  accumulator = event_accumulator.EventAccumulator(folder, size_guidance=_KEEP_ALL,
                                                   purge_orphaned_data=False)
  accumulator.Reload()
  tags = accumulator.Tags()
  # tf.summary.scalar (TF2) writes a tensor tagged for the scalars plugin;
  # tensors of other plugins (images, text, hparams) are left out.
  try:
    plugin_tags = accumulator.PluginTagToContent("scalars")
  except KeyError:  # Nothing in the folder was written for the scalars plugin.
    plugin_tags = {}
  events = {tag: [(e.step, e.wall_time, float(tf.make_ndarray(e.tensor_proto)))
                  for e in accumulator.Tensors(tag)]
            for tag in tags[event_accumulator.TENSORS] if tag in plugin_tags}
  # Old-style (TF1) summaries keep scalars in their own field.
  for tag in tags[event_accumulator.SCALARS]:
    events.setdefault(tag, []).extend((e.step, e.wall_time, e.value)
                                      for e in accumulator.Scalars(tag))
  return events


def _by_step(events):
  """(steps int64, values float64) sorted by step, the latest write of a step winning."""
  steps = np.array([e[0] for e in events], np.int64)
  wall_times = np.array([e[1] for e in events], np.float64)
  values = np.array([e[2] for e in events], np.float64)
  # Sort by step, then by write time, then by reading order (for equal times);
  # the last entry of each step is then its latest write.
  order = np.lexsort((np.arange(len(steps)), wall_times, steps))
  steps, values = steps[order], values[order]
  last = np.append(steps[1:] != steps[:-1], True)
  return steps[last], values[last]


def read_scalars(log_dir):
  """The scalars that training wrote under `log_dir`, read with TensorBoard's reader.

  Args:
    log_dir: the run's logs folder (`<model_dir>/logs`), holding train/ and
      validation/ event files as `Writers` writes them.

  Returns:
    {"train": {tag: (steps, values)}, "validation": {tag: (steps, values)}}
    with steps an int64 array in increasing order and values a float64 array
    of the same length. A step written more than once (a resumed run repeats
    the steps after its last checkpoint) keeps its latest value. A run whose
    folder is missing maps to {}.

  Raises:
    ValueError: log_dir does not exist.
  """
  if not tf.io.gfile.isdir(log_dir):
    raise ValueError(f"no log folder {log_dir!r}")
  scalars = {}
  for run in _RUNS:
    folder = os.path.join(log_dir, run)
    events = _scalar_events(folder) if tf.io.gfile.isdir(folder) else {}
    scalars[run] = {tag: _by_step(run_events) for tag, run_events in sorted(events.items())}
  return scalars


def train_seconds_at(log_dir, steps, train_seconds):
  """Seconds of training at each of `steps`, from the train summaries' write times.

  The last train summary was written when training ended, `train_seconds`
  after it began; earlier steps are placed by their summaries' wall times,
  interpolated between summaries (and from step 0 at second 0).

  Args:
    log_dir: the run's logs folder.
    steps: global steps to place.
    train_seconds: the run's measured training time (metrics.json).

  Returns:
    float64 array of seconds, one per step.

  Raises:
    ValueError: the folder holds no train summaries.
  """
  folder = os.path.join(log_dir, "train")
  events = [e for tag_events in (_scalar_events(folder) if tf.io.gfile.isdir(folder) else
                                 {}).values() for e in tag_events]
  if not events:
    raise ValueError(f"no train summaries in {log_dir!r}")
  # _by_step's rule for rewritten steps, with each event's wall time as its value.
  logged, walls = _by_step([(step, wall_time, wall_time) for step, wall_time, _ in events])
  seconds = np.concatenate([[0.0], train_seconds - (walls[-1] - walls)])
  return np.interp(np.asarray(steps, np.float64), np.concatenate([[0], logged]), seconds)
