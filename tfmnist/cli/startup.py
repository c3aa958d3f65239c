"""The start of every command: flags parsed before TensorFlow loads, and its C++ logs kept quiet.

Importing TensorFlow takes seconds. The commands define their flags in
modules that do not import it, so absl parses them, and reports a mistyped
one, at once; `main` calls `begin()`, which loads TensorFlow, before it
imports the libraries that need TensorFlow.

TensorFlow's C++ start-up lines (oneDNN, missing CUDA drivers, `failed call
to cuInit` on a machine without a GPU, CPU instructions) stay off the
console: TF_CPP_MIN_LOG_LEVEL defaults to 3, fatal errors only, which also
hides the cuInit line (an E-level line, still shown at level 2). The lines
that TensorFlow's libraries print while they load ignore that level (they
come before its logging is set up), so they are dropped from stderr during
the import. GPUs stay visible: nothing touches CUDA_VISIBLE_DEVICES.

$TFMNIST_TF_LOGS=1, or a TF_CPP_MIN_LOG_LEVEL of one's own, leaves
TensorFlow's logging as TensorFlow has it.
"""

import contextlib
import os
import re
import sys
import tempfile

from absl import app, flags, logging

SHOW_LOGS_ENV = "TFMNIST_TF_LOGS"
LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
# A C++ log line: severity letter, month and day (0000 before logging is set
# up), time; and the line absl prints before its first one.
_LOG_LINE = re.compile(r"^[IWE]\d{4} \S+ +\d+ \S+:\d+\] |"
                       r"^WARNING: All log messages before absl::InitializeLog\(\) is called")


def begin(argv, command, model_dir=None):
  """Opens a command's `main`: refuses stray arguments and a missing run folder, loads TensorFlow.

  absl's INFO chatter goes unless --verbosity was given, since it hides the
  progress bars. `model_dir`, when given, must be a folder; the command exits
  with one line naming it otherwise, before TensorFlow takes seconds to load.
  """
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if model_dir is not None and not os.path.isdir(model_dir):
    sys.exit(f"{command}: error: {model_dir}: no such run folder")
  load_tensorflow()


def quiet_logs():
  """Sets TF_CPP_MIN_LOG_LEVEL=3 unless TensorFlow's logs were asked for; says whether it did."""
  if os.environ.get(SHOW_LOGS_ENV, "") not in ("", "0") or LEVEL_ENV in os.environ:
    return False
  os.environ[LEVEL_ENV] = "3"
  return True


def load_tensorflow():
  """Imports TensorFlow, quietly unless its logs were asked for (see the module docstring)."""
  if "tensorflow" in sys.modules:
    return
  quiet = quiet_logs()
  with without_log_lines() if quiet else contextlib.nullcontext():
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import


@contextlib.contextmanager
def without_log_lines():
  """Runs the block with file descriptor 2 captured, then writes back all but C++ log lines.

  The C++ libraries write to the descriptor, not to sys.stderr. Fatal (F)
  lines and everything else, Python warnings included, are written back.
  """
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # No stderr to capture.
    yield
    return
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode(errors="replace").splitlines(keepends=True)
      sys.stderr.write("".join(line for line in lines if not _LOG_LINE.match(line)))
      sys.stderr.flush()
