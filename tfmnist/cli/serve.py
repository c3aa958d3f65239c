r"""Serves a trained run to try by drawing: python -m tfmnist.serve --model_dir=RUN

Opens http://127.0.0.1:8501/, a page to draw a digit on (or to send a photo
to), showing the 28x28 image the model sees and its class probabilities as
you draw. Behind it, TensorFlow Serving's REST API answers any client:

  curl -d '{"instances": [IMAGE]}' http://127.0.0.1:8501/v1/models/RUN:predict

where IMAGE is a uint8 28x28x1 array (with "signature_name": "serving_nhw",
28x28). The model is the run's SavedModel export (exported in process when
the run has none). The server listens on 127.0.0.1 only and is for trying a
model; for production, serve the same export with TensorFlow Serving.
"""

import os
import signal
import sys

from absl import app, flags

from tfmnist.cli import startup
from tfmnist.errors import DataError

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The run folder (or an export folder).")
_PORT = flags.DEFINE_integer("port", 8501, "TCP port on 127.0.0.1; 0: any free one.",
                             lower_bound=0, upper_bound=65535)
_MODEL_NAME = flags.DEFINE_string(
    "model_name", "", "The model's name in the URLs (/v1/models/<name>); empty: the run "
    "folder's base name.")
_MAX_REQUEST_MB = flags.DEFINE_float(
    "max_request_mb", 8.0, "Larger request bodies are refused unread (megabytes).")


def main(argv):
  model_dir = _MODEL_DIR.value
  model_name = _MODEL_NAME.value or os.path.basename(os.path.normpath(os.path.abspath(
      model_dir)))
  startup.begin(argv, "serve", model_dir)
  from tfmnist.serving import inference, server  # pylint: disable=g-import-not-at-top
  try:
    server.check_model_name(model_name)
    model = inference.load(model_dir)
  except (DataError, ValueError) as e:
    sys.exit(f"serve: error: {e}")
  try:
    httpd = server.ModelServer(model, model_name, _PORT.value, _MAX_REQUEST_MB.value)
  except ValueError as e:
    sys.exit(f"serve: error: {e}")
  except OSError as e:
    sys.exit(f"serve: error: cannot listen on {server.HOST}:{_PORT.value} "
             f"({e.strerror or e}); pass another --port")
  print(f"serving {model_dir} (model \"{model_name}\") on {httpd.url} ; Ctrl-C stops",
        flush=True)
  # `kill` stops it as Ctrl-C does, so that a checkpoint exported in process
  # to a temporary folder is removed on the way out.
  signal.signal(signal.SIGTERM, _interrupt)
  # Ctrl-C too, explicitly: a process started in the background by a shell
  # without job control inherits SIGINT ignored, and Python then never raises
  # KeyboardInterrupt (CI starts the tests that way).
  signal.signal(signal.SIGINT, _interrupt)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()
  # Leave without the interpreter's teardown: a request thread may still be
  # inside TensorFlow, and tearing TensorFlow down under it can stall the exit
  # (once for over 30 s on a busy 2-core machine). The temporary export goes first.
  tmp = getattr(model, "tmp", None)
  if tmp is not None:
    tmp.cleanup()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)  # pylint: disable=protected-access


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def run():
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
