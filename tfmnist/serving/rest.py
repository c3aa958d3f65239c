"""TensorFlow Serving's REST API as pure functions: JSON bodies in, arrays out, and back.

A client written for TensorFlow Serving
(https://www.tensorflow.org/tfx/serving/api_rest) works unchanged against
`tfmnist.serving.server`, which answers with what these functions make:

  POST /v1/models/<name>:predict, a JSON object, in one of two formats:
    row:       {"signature_name": optional, "instances": [image, ...]}, where an
               instance is the image array or an object {"images": array};
               answered {"predictions": [{"probabilities": [...], "classes": 3}, ...]}
    columnar:  {"signature_name": optional, "inputs": array or {"images": array}};
               answered {"outputs": {"probabilities": [[...]], "classes": [...]}}
  GET /v1/models/<name>           the model's status, TF Serving's shape
  GET /v1/models/<name>/metadata  its signatures' dtypes and shapes where TF Serving puts
                                  them (no graph tensor names), plus the class names

Images are uint8, so every value must be an integer 0..255. Nothing is
cast: 12.5, -1, 256, "7", true or null is refused with a reason that names
the input, rather than turned into some other pixel. A whole number written
as a float (12.0) is accepted, because JSON does not tell 12.0 from 12
(JavaScript's JSON.stringify writes both as 12).
"""

import json
from typing import NamedTuple

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
VERSION = "1"  # One model, loaded once: TF Serving would call it version 1.
_DT_NAMES = {"uint8": "DT_UINT8", "float32": "DT_FLOAT", "int64": "DT_INT64"}


class RequestError(ValueError):
  """A request the server cannot answer; the message is one line, for {"error": ...}."""


class Tensor(NamedTuple):
  """A signature's input or output: numpy dtype name and shape (None: any size)."""
  dtype: str
  shape: tuple


class Signature(NamedTuple):
  """A SavedModel signature: {name: Tensor} of its inputs and outputs."""
  inputs: dict
  outputs: dict


def describe_signatures(signatures):
  """{name: Signature} of a loaded SavedModel's `.signatures` (concrete functions)."""

  def tensors(specs):
    return {name: Tensor(spec.dtype.name, tuple(spec.shape.as_list()))
            for name, spec in sorted(specs.items())}

  return {name: Signature(tensors(fn.structured_input_signature[1]),
                          tensors(fn.structured_outputs))
          for name, fn in sorted(signatures.items())}


def _shape_text(shape):
  return "[" + ", ".join("N" if size is None else str(size) for size in shape) + "]"


def _load_json(body):
  """The JSON object of a request body, or RequestError saying why it is not one."""
  def refuse_constant(name):
    raise RequestError(f"the body is not JSON: {name} is not a number JSON allows")

  if isinstance(body, (bytes, bytearray)):
    try:
      body = body.decode("utf-8")  # JSON's own encoding (RFC 8259); json.loads would guess.
    except UnicodeDecodeError:
      raise RequestError("the body is not JSON: it is not UTF-8 text") from None
  try:
    value = json.loads(body, parse_constant=refuse_constant)
  except json.JSONDecodeError as e:
    raise RequestError(f"the body is not JSON: {e}") from None
  except RecursionError:
    raise RequestError("the body is not JSON this server reads: lists nested too "
                       "deeply") from None
  if not isinstance(value, dict):
    raise RequestError(f"the body must be a JSON object with \"instances\" or \"inputs\", "
                       f"got a JSON {_json_type(value)}")
  return value


def _json_type(value):
  if isinstance(value, bool):
    return "boolean"
  if value is None:
    return "null"
  return {dict: "object", list: "array", str: "string", int: "number",
          float: "number"}.get(type(value), type(value).__name__)


def _first(mask):
  """The index of the first True in `mask`, as a list, e.g. [0, 3, 4, 0]."""
  return [int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape)]


def to_uint8(value, name, shape, signature_name):
  """A nested JSON list as a uint8 array of `shape` (None: any size), or RequestError.

  Args:
    value: the parsed JSON (nested lists of numbers).
    name: the input's name, for the error (e.g. "images").
    shape: the expected shape, None for the batch dimension.
    signature_name: for the error, with the other signature's shape as a hint.
  """
  try:
    array = np.array(value, dtype=object)
  except (ValueError, TypeError, RecursionError):
    array = None
  leaves = set() if array is None else set(map(type, array.ravel()))
  if array is None or list in leaves:
    raise RequestError(f"{name}: ragged lists (rows of different lengths or depths); send "
                       f"a rectangular array shaped {_shape_text(shape)}")
  if len(array.shape) != len(shape) or any(
      want is not None and got != want for got, want in zip(array.shape, shape)):
    raise RequestError(f"{name} must be uint8 {_shape_text(shape)} for signature "
                       f"{signature_name}, got shape {list(array.shape)}"
                       f"{_other_signature_hint(array.shape)}")
  for kind in (bool, str, type(None), dict):
    if kind in leaves:
      at = _first(np.vectorize(lambda v, k=kind: type(v) is k, otypes=[bool])(array))
      raise RequestError(f"{name}: {json.dumps(array[tuple(at)])} at {at} is not a number; "
                         "pixel values must be integers 0..255 (uint8)")
  if not leaves <= {int, float}:
    raise RequestError(f"{name}: values must be integers 0..255 (uint8)")
  # float64 holds every value 0..255 exactly, so a value is a pixel when its
  # float64 is whole and in range; a huge integer that rounds is out of range anyway.
  floats = array.astype(np.float64)
  whole = np.isfinite(floats) & (floats == np.floor(floats))
  if not whole.all():
    at = _first(~whole)
    raise RequestError(f"{name}: {array[tuple(at)]!r} at {at} is not an integer; pixel "
                       "values must be integers 0..255 (uint8), nothing is rounded")
  outside = (floats < 0) | (floats > 255)
  if outside.any():
    at = _first(outside)
    raise RequestError(f"{name}: {array[tuple(at)]!r} at {at} is outside 0..255; pixel "
                       "values must be integers 0..255 (uint8)")
  return floats.astype(np.uint8)


def _other_signature_hint(shape):
  """A hint naming the signature that takes `shape`, if one does."""
  if len(shape) == 3 and tuple(shape[1:]) == (28, 28):
    return " (send [N, 28, 28] with \"signature_name\": \"serving_nhw\")"
  if len(shape) == 4 and tuple(shape[1:]) == (28, 28, 1):
    return " (send [N, 28, 28, 1] with \"signature_name\": \"serving_default\" or none)"
  return ""


def _signature(request, signatures):
  """(name, Signature) the request asks for, or RequestError."""
  name = request.get("signature_name", DEFAULT_SIGNATURE)
  if not isinstance(name, str):
    raise RequestError(f"signature_name must be a string, got a JSON {_json_type(name)}")
  name = name or DEFAULT_SIGNATURE  # TF Serving reads "" as the default too.
  if name not in signatures:
    raise RequestError(f"signature_name \"{name}\" not found; this model has "
                       f"{', '.join(sorted(signatures))}")
  signature = signatures[name]
  if len(signature.inputs) != 1:
    raise RequestError(f"signature {name} has {len(signature.inputs)} inputs; this server "
                       "answers signatures of one input")
  return name, signature


def _unwrap(value, input_name, where):
  """The input's value of `{input_name: value}`, or `value` itself when not an object."""
  if not isinstance(value, dict):
    return value
  extra = sorted(set(value) - {input_name})
  if extra:
    raise RequestError(f"{where} has the key \"{extra[0]}\"; the signature's only input is "
                       f"\"{input_name}\"")
  if input_name not in value:
    raise RequestError(f"{where} has no \"{input_name}\"; send {{\"{input_name}\": array}}")
  return value[input_name]


def parse_predict_request(body, signatures):
  """Reads a :predict request in TensorFlow Serving's row or columnar format.

  Args:
    body: the request body (bytes or str).
    signatures: {signature name: Signature}, e.g. from describe_signatures.

  Returns:
    (signature name, uint8 array of its input, whether the request is in the row format).

  Raises:
    RequestError: the body is not such a request, or its images are not uint8
      arrays of the signature's shape.
  """
  request = _load_json(body)
  if "instances" in request and "inputs" in request:
    raise RequestError("send either \"instances\" (row format) or \"inputs\" (columnar "
                       "format), not both")
  if "instances" not in request and "inputs" not in request:
    raise RequestError("missing \"instances\" or \"inputs\": send {\"instances\": [image, "
                       "...]} or {\"inputs\": {\"images\": [image, ...]}}")
  name, signature = _signature(request, signatures)
  (input_name, tensor), = signature.inputs.items()
  if tensor.dtype != "uint8":
    raise RequestError(f"signature {name} takes {tensor.dtype}; this server answers uint8 "
                       "images only")
  if "inputs" in request:
    value = _unwrap(request["inputs"], input_name, "inputs")
    return name, to_uint8(value, input_name, tensor.shape, name), False
  instances = request["instances"]
  if not isinstance(instances, list):
    raise RequestError(f"instances must be a list of images, got a JSON "
                       f"{_json_type(instances)}")
  if not instances:
    raise RequestError("instances is empty; send at least one image")
  if len({isinstance(i, dict) for i in instances}) > 1:
    raise RequestError(f"instances mixes objects and arrays; send every image as an array, "
                       f"or every one as {{\"{input_name}\": array}}")
  values = [_unwrap(v, input_name, f"instances[{i}]") for i, v in enumerate(instances)]
  return name, to_uint8(values, input_name, tensor.shape, name), True


def _floats(array):
  """float32 values as JSON numbers in their shortest form (0.1, not 0.10000000149011612)."""
  return [float(str(value)) for value in np.asarray(array, np.float32).ravel()]


def predict_response(outputs, row_format):
  """The JSON-ready answer of a :predict request.

  Args:
    outputs: {"probabilities": float32 [N, C], "classes": int [N]} (numpy).
    row_format: whether the request was in the row format ("instances").
  """
  probabilities = np.asarray(outputs["probabilities"])
  rows = [_floats(row) for row in probabilities]
  classes = [int(c) for c in np.asarray(outputs["classes"])]
  if row_format:
    return {"predictions": [{"probabilities": p, "classes": c} for p, c in zip(rows, classes)]}
  return {"outputs": {"probabilities": rows, "classes": classes}}


def status_response():
  """GET /v1/models/<name>: TF Serving's GetModelStatusResponse of one loaded version."""
  return {"model_version_status": [{"version": VERSION, "state": "AVAILABLE",
                                    "status": {"error_code": "OK", "error_message": ""}}]}


def _tensor_info(tensor):
  """A Tensor as TF Serving prints a TensorInfo (sizes are strings, as int64s in proto JSON)."""
  return {"dtype": _DT_NAMES.get(tensor.dtype, f"DT_{tensor.dtype.upper()}"),
          "tensor_shape": {"dim": [{"size": str(-1 if size is None else size), "name": ""}
                                   for size in tensor.shape], "unknown_rank": False}}


def metadata_response(model_name, signatures, class_names):
  """GET /v1/models/<name>/metadata: TF Serving's shape, plus the class names.

  TF Serving answers {"model_spec": ..., "metadata": {"signature_def":
  {"signature_def": {name: SignatureDef}}}}; a client reading it finds the
  same paths here. "class_names" is ours: the labels that "classes" indexes.
  """
  return {
      "model_spec": {"name": model_name, "signature_name": "", "version": VERSION},
      "metadata": {
          "signature_def": {"signature_def": {
              name: {"inputs": {k: _tensor_info(t) for k, t in s.inputs.items()},
                     "outputs": {k: _tensor_info(t) for k, t in s.outputs.items()},
                     "method_name": "tensorflow/serving/predict"}
              for name, s in signatures.items()}},
          "class_names": list(class_names)}}


def error_response(message):
  """TF Serving's error body: {"error": "<one-line reason>"}."""
  return {"error": " ".join(str(message).split())}
