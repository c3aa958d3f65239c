"""The run folder: the one module that knows its layout and reads or writes its files.

    <model_dir>/
      flags.txt        the run's flags, for people to read and to rerun it
      config.json      the TrainConfig as trained (precision resolved), for programs
      manifest.json    versions, CPU, precision choice, classes, records and their checksums
      checkpoints/     ckpt-<step>, the newest few
      best/            the checkpoint with the best validation accuracy
      logs/            TensorBoard: train/, validation/, eval_<split>/
      export/          the SavedModel
      metrics.json     the final metrics of training
      eval/<split>/    evaluation reports
      .workers/<task>/ scratch folders of non-chief workers

An export folder on its own (an exported ensemble) has no run around it; its
reports go to a sibling folder `<export>_eval`.
"""

import json
import os
import shutil

from absl import logging

from tfmnist import files

FLAGS_FILE = "flags.txt"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
SAVED_MODEL_FILE = "saved_model.pb"


def is_export(path):
  """Whether `path` is a SavedModel folder rather than a run folder."""
  return os.path.exists(os.path.join(path, SAVED_MODEL_FILE))


def _read_json(path):
  """The JSON object in `path`; {} when it is missing, unreadable or not an object."""
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    logging.warning("%s is unreadable (%s); ignoring it", path, e)
    return {}
  return value if isinstance(value, dict) else {}


class RunDir:
  """Paths and files of one run folder (or an export folder's report home).

  Attributes:
    path: the folder.
  """

  def __init__(self, path):
    self.path = str(path)

  def __repr__(self):
    return f"RunDir({self.path!r})"

  def _join(self, *names):
    return os.path.join(self.path, *names)

  @property
  def checkpoints(self):
    return self._join("checkpoints")

  @property
  def best(self):
    return self._join("best")

  @property
  def export(self):
    return self._join("export")

  @property
  def logs(self):
    return self._join("logs")

  def log_dir(self, name):
    """A TensorBoard run under logs/: "train", "validation" or "eval_<split>"."""
    return self._join("logs", name)

  def eval_dir(self, split):
    return self._join("eval", split)

  def has_export(self):
    return is_export(self.export)

  # Files -------------------------------------------------------------------

  def read_manifest(self):
    """manifest.json, or {} when the run has none (yet)."""
    return _read_json(self._join(MANIFEST_FILE))

  def read_metrics(self):
    """metrics.json, or {} when training has not finished (or it is unreadable)."""
    return _read_json(self._join(METRICS_FILE))

  def read_config(self):
    """config.json as a dict, or None for a run folder that has none."""
    values = _read_json(self._join(CONFIG_FILE))
    return values or None

  def write_run_files(self, flags_text, config, manifest):
    """flags.txt, config.json and manifest.json, each written atomically."""
    os.makedirs(self.path, exist_ok=True)
    files.write_text_atomically(self._join(FLAGS_FILE), flags_text)
    files.write_text_atomically(self._join(CONFIG_FILE), json.dumps(config, indent=1))
    files.write_text_atomically(self._join(MANIFEST_FILE), json.dumps(manifest, indent=1))

  def write_metrics(self, metrics):
    files.write_text_atomically(self._join(METRICS_FILE), json.dumps(metrics, indent=1))

  # Workers -----------------------------------------------------------------

  def for_worker(self, is_chief, task_type="", task_id=0):
    """This folder on the chief; a scratch folder inside it on another worker."""
    if is_chief:
      return self
    return RunDir(self._join(".workers", f"{task_type}_{task_id}"))

  def remove_worker_scratch(self, work_dir):
    """Removes a non-chief's scratch folder, and `.workers` once no worker has one."""
    if os.path.abspath(work_dir.path) == os.path.abspath(self.path):
      return
    shutil.rmtree(work_dir.path, ignore_errors=True)
    try:
      os.rmdir(os.path.dirname(work_dir.path))
    except OSError:  # Another worker's folder is still there.
      pass


def report_home(path):
  """The RunDir whose eval/ and logs/ receive reports on the model at `path`.

  A run folder is its own; an export folder is replaced whole by the next
  export, so its reports go beside it, to `<path>_eval`.
  """
  return RunDir(os.path.normpath(path) + "_eval" if is_export(path) else path)
