"""Runs LiteRT files on labelled images with LiteRT's own interpreter, as a phone or board would.

A program on its own: `python -I litert_check.py REQUEST.json`. It imports
numpy and ai_edge_litert only, never tfmnist or TensorFlow, so that what it
measures is what a device that has nothing but the LiteRT runtime gets; the
answer records which of them were loaded, for the caller to check.

REQUEST.json: {"files": [paths], "data": an .npz with `images` uint8
[N, 28, 28, 1], `labels` [N] and `reference` [N] (the SavedModel's classes),
"threads": int}. Each image is one call at batch 1, quantized with the
file's own input scale and zero point when its input is an integer type.
Progress goes to stdout as lines `{"file": path, "done": n}`, then one
line `{"results": [...], "loaded": {...}}`.
"""

import json
import os
import sys
import time

import numpy as np

REPORT_EVERY = 500  # Images between progress lines.


def _send(message):
  """One JSON line to the parent process, which reads this program's stdout as messages."""
  sys.stdout.write(json.dumps(message) + "\n")
  sys.stdout.flush()


def _quantize(image, details):
  """The uint8 pixels as the file's input tensor: as floats, or quantized to its integer type."""
  dtype = details["dtype"]
  if np.issubdtype(dtype, np.floating):
    return image.astype(dtype)
  scale, zero_point = details["quantization"]
  info = np.iinfo(dtype)
  return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values, details):
  if np.issubdtype(details["dtype"], np.floating):
    return values.astype(np.float32)
  scale, zero_point = details["quantization"]
  return (values.astype(np.float32) - zero_point) * scale


def check_file(path, images, labels, reference, threads):
  """Accuracy, agreement with `reference` and milliseconds per image of one file."""
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_path=path, num_threads=threads)
  interpreter.allocate_tensors()
  source, = interpreter.get_input_details()
  target, = interpreter.get_output_details()
  classes = np.zeros(len(images), np.int64)
  seconds = 0.0
  for i, image in enumerate(images):
    interpreter.set_tensor(source["index"], _quantize(image[None], source))
    start = time.perf_counter()
    interpreter.invoke()
    seconds += time.perf_counter() - start
    probabilities = _dequantize(interpreter.get_tensor(target["index"])[0], target)
    classes[i] = int(np.argmax(probabilities))
    if (i + 1) % REPORT_EVERY == 0 or i + 1 == len(images):
      _send({"file": path, "done": i + 1})
  return {"file": os.path.basename(path), "bytes": os.path.getsize(path),
          "accuracy": float(np.mean(classes == labels)),
          "agreement": float(np.mean(classes == reference)),
          "ms_per_image": 1000 * seconds / max(len(images), 1),
          "input": {"dtype": np.dtype(source["dtype"]).name,
                    "shape": [int(n) for n in source["shape"]],
                    "scale": float(source["quantization"][0]),
                    "zero_point": int(source["quantization"][1])},
          "output": {"dtype": np.dtype(target["dtype"]).name,
                     "scale": float(target["quantization"][0]),
                     "zero_point": int(target["quantization"][1])}}


def main(request_path):
  with open(request_path) as f:
    request = json.load(f)
  data = np.load(request["data"])
  images, labels, reference = data["images"], data["labels"], data["reference"]
  results = [check_file(path, images, labels, reference, request["threads"])
             for path in request["files"]]
  loaded = {name: name in sys.modules for name in ("tfmnist", "tensorflow")}
  _send({"results": results, "loaded": loaded})


if __name__ == "__main__":
  main(sys.argv[1])
