"""The SavedModel that leaves tfmnist: uint8 images in, probabilities out.

Signature `serving_default`:
  images: uint8 [N, 28, 28] or [N, 28, 28, 1]
  -> probabilities: float32 [N, classes], classes: int64 [N]
Normalisation happens inside (data.normalize), and the class names travel
as the asset `class_names.txt`, so the model loads and runs with plain
TensorFlow in a program that never imports tfmnist.
"""

import os
import shutil
import tempfile

import tensorflow as tf

from tfmnist import data

CLASS_NAMES_FILE = "class_names.txt"


class ServingModule(tf.Module):
  """Wraps a trained model (or several, averaged) behind the serving signature."""

  def __init__(self, models, class_names_path):
    super().__init__(name="tfmnist")
    self.models = list(models)
    self.class_names_file = tf.saved_model.Asset(class_names_path)
    with open(class_names_path) as f:
      self.class_names = tf.constant([line.rstrip("\n") for line in f])

  @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
  def serve(self, images):
    """Probabilities and classes of uint8 images [N,28,28] or [N,28,28,1]."""
    message = "images must be uint8 [N, 28, 28] or [N, 28, 28, 1]"
    rank = tf.rank(images)
    # The checks gate the ops after them: otherwise the graph may run
    # ensure_shape first and fail with a message that names no expected shape.
    with tf.control_dependencies([tf.debugging.assert_equal(
        tf.logical_or(tf.equal(rank, 3), tf.equal(rank, 4)), True, message=message)]):
      images = tf.cond(tf.equal(rank, 3), lambda: tf.expand_dims(images, -1),
                       lambda: tf.identity(images))
    with tf.control_dependencies([tf.debugging.assert_equal(
        tf.shape(images)[1:], tf.constant([28, 28, 1]), message=message)]):
      images = tf.ensure_shape(images, [None, 28, 28, 1])
    x = data.normalize(images)
    probabilities = tf.add_n([tf.nn.softmax(tf.cast(m(x, training=False), tf.float32))
                              for m in self.models]) / len(self.models)
    return {"probabilities": probabilities,
            "classes": tf.argmax(probabilities, axis=-1)}


def export(models, class_names, export_dir):
  """Writes the SavedModel to `export_dir` atomically (temporary folder, rename).

  Args:
    models: one Keras model, or a list whose probabilities are averaged.
    class_names: names in label order.
    export_dir: destination; replaced if it exists.
  """
  if not isinstance(models, (list, tuple)):
    models = [models]
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
  try:
    names_path = os.path.join(tmp, CLASS_NAMES_FILE)
    with open(names_path, "w") as f:
      f.write("".join(f"{name}\n" for name in class_names))
    module = ServingModule(models, names_path)
    saved = os.path.join(tmp, "saved_model")
    tf.saved_model.save(module, saved, signatures={"serving_default": module.serve})
    old = None
    if os.path.exists(export_dir):
      old = tempfile.mkdtemp(prefix=".export-old-", dir=parent)
      os.replace(export_dir, os.path.join(old, "x"))
    os.replace(saved, export_dir)
    if old:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return export_dir
