"""An exported model over HTTP: TensorFlow Serving's REST API and a page to draw digits on.

  GET  /                                the drawing page (page.html)
  POST /v1/models/<name>:predict        TF Serving's predict, row or columnar (serving.rest)
  GET  /v1/models/<name>                TF Serving's model status
  GET  /v1/models/<name>/metadata       the signatures, TF Serving's shape, and class names
  POST /v1/models/<name>:preprocess     ours: the body is an image file; answers the 28x28
                                        uint8 image data.photos makes of it, {"image": rows}

`/v1/models/<name>/versions/1` works wherever `/v1/models/<name>` does, as in
TF Serving. The page uses the endpoints as any client would: it sends its
canvas (a PNG) or a chosen photo to :preprocess, and the image that comes
back to :predict. Bad requests are answered 400 with TF Serving's
{"error": "<reason>"}; a model name or version that is not served, 404,
as TF Serving answers them; other paths, 404.

The server is the standard library's ThreadingHTTPServer, for trying a
model on one machine: it listens on 127.0.0.1 only. For production, serve
the same export with TensorFlow Serving.
"""

import html
import http.server
import importlib.resources
import json
import re
import threading
import urllib.parse

from absl import logging
import tensorflow as tf

from tfmnist.data import photos
from tfmnist.errors import DataError
from tfmnist.serving import rest

HOST = "127.0.0.1"
# What TF Serving's REST paths look like: /v1/models/<name>[/versions/<n>][:<method>|/metadata].
_MODEL_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?(:[a-z]+|/metadata)?")
# A body left unread (too large, or sent where none is read) is drained, up
# to this much, before the connection closes (see _Handler._drop_body).
_DRAIN_BYTES = 64 << 20
_DRAIN_SECONDS = 2.0


class NotFound(Exception):
  """A path, model or version that is not served (HTTP 404)."""


def page_html(model_name):
  """The drawing page, knowing the model's name."""
  text = importlib.resources.files("tfmnist.serving").joinpath("page.html").read_text("utf-8")
  return text.replace("__MODEL_NAME__", html.escape(model_name, quote=True))


def check_model_name(model_name):
  """Raises ValueError unless `model_name` can be a TF Serving model name in a URL path."""
  if not model_name or "/" in model_name or ":" in model_name:
    raise ValueError(f"model_name {model_name!r} must be non-empty, without '/' or ':' "
                     "(it is a part of the URL /v1/models/<model_name>)")


class ModelServer(http.server.ThreadingHTTPServer):
  """One exported model behind the REST API and the page, on 127.0.0.1.

  Args:
    model: an inference.ExportedModel (its `.loaded` SavedModel answers).
    model_name: the <name> of the URLs.
    port: TCP port; 0 picks a free one (then read `.port`).
    max_request_mb: larger bodies are refused from their Content-Length, unread.

  Raises:
    ValueError: a bad model name or limit.
    OSError: the port cannot be listened on (e.g. it is in use).
  """

  daemon_threads = True  # A request in progress does not hold up Ctrl-C.

  def __init__(self, model, model_name, port=8501, max_request_mb=8.0):
    check_model_name(model_name)
    if not max_request_mb > 0:
      raise ValueError(f"max_request_mb must be positive, got {max_request_mb}")
    self.model = model
    self.model_name = model_name
    self.max_request_bytes = int(max_request_mb * (1 << 20))
    self.signatures = rest.describe_signatures(model.loaded.signatures)
    self.page = page_html(model_name).encode("utf-8")
    super().__init__((HOST, port), _Handler)

  @property
  def port(self):
    return self.server_address[1]

  @property
  def url(self):
    return f"http://{HOST}:{self.port}/"

  def predict(self, body):
    """The JSON answer of a :predict body (rest.RequestError when it is bad)."""
    signature_name, images, row_format = rest.parse_predict_request(body, self.signatures)
    outputs = self.model.loaded.signatures[signature_name](images=tf.constant(images))
    return rest.predict_response({k: v.numpy() for k, v in outputs.items()}, row_format)

  def metadata(self):
    return rest.metadata_response(self.model_name, self.signatures, self.model.class_names)

  def route(self, method, path, read_body):
    """(status, JSON answer) of a REST request; raises NotFound or rest.RequestError.

    `read_body()` returns the body; it is called only by the POST endpoints.
    """
    match = _MODEL_PATH.fullmatch(path)
    if not match:
      raise NotFound(f"no such path: {method} {path}")
    name, version, action = match.groups()
    if name != self.model_name:
      raise NotFound(f"Servable not found for request: Latest({name}); this server serves "
                     f"the model \"{self.model_name}\" at /v1/models/{self.model_name}")
    if version is not None and version != rest.VERSION:
      raise NotFound(f"Servable not found for request: Specific({name}, {version}); this "
                     f"server has version {rest.VERSION} only")
    wanted = {(None, "GET"): rest.status_response, ("/metadata", "GET"): self.metadata,
              (":predict", "POST"): lambda: self.predict(read_body()),
              (":preprocess", "POST"): lambda: preprocess(read_body())}
    if (action, method) not in wanted:
      if any(a == action for a, _ in wanted):
        allowed = next(m for a, m in wanted if a == action)
        raise rest.RequestError(f"{path} takes {allowed}, not {method}")
      raise NotFound(f"no such path: {method} {path}")
    return 200, wanted[action, method]()


def preprocess(body):
  """{"image": 28 rows of 28 ints} of an image file's bytes, as data.photos makes it."""
  if not body:
    raise rest.RequestError("the body is empty; send the bytes of an image file "
                            "(PNG, JPEG, BMP or GIF)")
  try:
    pixels = photos.decode_image(body, "the upload")
    image = photos.preprocess_image(pixels)
  except (DataError, ValueError) as e:
    raise rest.RequestError(str(e)) from None
  return {"image": image.tolist()}


class _Handler(http.server.BaseHTTPRequestHandler):
  """Answers one request through its ModelServer; every answer is JSON but the page."""

  server: ModelServer
  server_version = "tfmnist-serve"
  # HTTP/1.1: connections are kept for the page's many requests, and a client
  # that sends "Expect: 100-continue" (curl, for large bodies) hears at once
  # whether to send its body, instead of waiting a second for an answer.
  protocol_version = "HTTP/1.1"
  timeout = 60  # Seconds an idle kept connection holds its thread.

  def do_GET(self):  # pylint: disable=invalid-name
    self._body_read = False
    path = self._path()
    if path in ("/", "/index.html"):
      self._send(200, self.server.page, "text/html; charset=utf-8",
                 {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                  "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})
      return
    self._answer("GET", path)

  def do_POST(self):  # pylint: disable=invalid-name
    self._body_read = False
    self._answer("POST", self._path())

  def _path(self):
    return urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)

  def _answer(self, method, path):
    try:
      status, answer = self.server.route(method, path, self._read_body)
    except NotFound as e:
      status, answer = 404, rest.error_response(e)
    except rest.RequestError as e:
      status, answer = 400, rest.error_response(e)
    except Exception as e:  # pylint: disable=broad-except
      # One bad request must not stop the server; the log keeps the traceback.
      logging.exception("serving %s %s failed", method, path)
      status, answer = 500, rest.error_response(f"internal error: {type(e).__name__}: {e}")
    self._send(status, json.dumps(answer).encode("utf-8"), "application/json")

  def handle_expect_100(self):
    """Says "100 Continue" only to a body that will be read; refuses the others at once."""
    try:
      self._body_length()
    except rest.RequestError as e:
      self._body_read = True  # The client waits for this answer: no body is on its way.
      self.close_connection = True
      self._send(400, json.dumps(rest.error_response(e)).encode("utf-8"), "application/json")
      return False
    return super().handle_expect_100()

  def _body_length(self):
    """The Content-Length of a body this server reads, or RequestError saying why not."""
    if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
      raise rest.RequestError("chunked request bodies are not read; send a Content-Length")
    try:
      length = int(self.headers.get("Content-Length") or 0)
    except ValueError:
      raise rest.RequestError("Content-Length is not a number") from None
    if length < 0 or length > self.server.max_request_bytes:
      raise rest.RequestError(f"the body is {length} bytes, over the limit of "
                              f"{self.server.max_request_bytes} bytes (max_request_mb)")
    return length

  def _read_body(self):
    """The request body; RequestError when it is too large, unread."""
    body = self.rfile.read(self._body_length())
    self._body_read = True
    return body

  def _send(self, status, data, content_type, headers=None):
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(data)))
    self.send_header("Cache-Control", "no-store")
    for key, value in (headers or {}).items():
      self.send_header(key, value)
    if not self._body_read and self._has_body():
      self.close_connection = True  # The next request would start inside this body.
      self.send_header("Connection", "close")
    self.end_headers()
    self.wfile.write(data)
    self.wfile.flush()
    if self.close_connection and not self._body_read:
      self._drop_body()

  def _has_body(self):
    return ("Transfer-Encoding" in self.headers
            or self.headers.get("Content-Length", "0").strip() not in ("", "0"))

  def _drop_body(self):
    """Reads and drops a body left unread, a little at a time, before the connection closes.

    Closing a socket with unread data sends a TCP reset, and the client may
    lose the answer it was sent. At most _DRAIN_BYTES are read, for at most
    _DRAIN_SECONDS each read; nothing is kept.
    """
    try:
      left = min(int(self.headers.get("Content-Length") or 0), _DRAIN_BYTES)
    except ValueError:
      return
    self.connection.settimeout(_DRAIN_SECONDS)
    try:
      while left > 0:
        chunk = self.rfile.read1(min(left, 1 << 16))
        if not chunk:
          break
        left -= len(chunk)
    except OSError:
      pass

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.info("%s %s", self.address_string(), format % args)


def start_in_thread(model, model_name, port=0, max_request_mb=8.0):
  """A ModelServer answering in a daemon thread (port 0: a free one, see `.port`).

  Stop it with `stop(server)`.
  """
  server = ModelServer(model, model_name, port, max_request_mb)
  thread = threading.Thread(target=server.serve_forever, name=f"serve-{model_name}",
                            daemon=True)
  thread.start()
  server.thread = thread
  return server


def stop(server):
  """Stops a server from start_in_thread and closes its socket."""
  server.shutdown()
  server.server_close()
  server.thread.join()
