"""Converts a tfmnist export to LiteRT files, in a process of its own.

A program on its own: `python -I litert_convert.py REQUEST.json`, with
TensorFlow and numpy only. LiteRT's converter is native code that can take
its process down with it (its int8 quantizer crashed on a graph with an op
it cannot quantize), so serving.litert runs it here and turns a crash into
one line.

REQUEST.json: {"export": SavedModel folder, "calibration": an .npz with
`images` uint8 [N, 28, 28, 1], "variants": [names], "output": folder}.
Writes <output>/<variant>.tflite. Prints `{"variant": name}` as each one
starts, and `{"error": variant, "message": text}` when the converter raises.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top


def _send(message):
  """One JSON line to the parent process, which reads this program's stdout as messages."""
  sys.stdout.write(json.dumps(message) + "\n")
  sys.stdout.flush()


def pixels_function(loaded):
  """The export's float32 pixels [1, 28, 28, 1] -> {"probabilities"} concrete function.

  A fixed batch of 1: microcontroller runtimes take static shapes only.
  """
  @tf.function(input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32, name="pixels")],
               autograph=False)
  def probabilities(pixel_values):
    return {"probabilities": loaded.probabilities_of_pixels(pixel_values)}

  return probabilities.get_concrete_function()


def converter(loaded, function, variant, calibration_images):
  """The TFLiteConverter of one variant (see serving/litert.py for what each is)."""
  result = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
  if variant != "float32":
    result.optimizations = [tf.lite.Optimize.DEFAULT]
  if variant == "float16":
    result.target_spec.supported_types = [tf.float16]
  elif variant == "int8":
    def representative():
      for image in calibration_images:
        yield [image[None].astype(np.float32)]
    result.representative_dataset = representative
    result.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    result.inference_input_type = tf.uint8
    result.inference_output_type = tf.uint8
  elif variant != "dynamic_range" and variant != "float32":
    raise ValueError(f"unknown variant {variant!r}")
  return result


def main(request_path):
  with open(request_path) as f:
    request = json.load(f)
  loaded = tf.saved_model.load(request["export"])
  function = pixels_function(loaded)
  calibration = np.load(request["calibration"])["images"]
  for variant in request["variants"]:
    _send({"variant": variant})
    try:
      flatbuffer = converter(loaded, function, variant, calibration).convert()
    except Exception as e:  # pylint: disable=broad-except  # Reported whole to the caller.
      _send({"error": variant, "message": str(e)})
      sys.exit(1)
    with open(os.path.join(request["output"], f"{variant}.tflite"), "wb") as f:
      f.write(flatbuffer)


if __name__ == "__main__":
  main(sys.argv[1])
