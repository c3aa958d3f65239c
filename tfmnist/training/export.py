"""The SavedModel that leaves tfmnist: uint8 images in, probabilities out.

Signatures, both with the same outputs
(probabilities: float32 [N, classes], classes: int64 [N]):
  serving_default: images uint8 [N, 28, 28, 1], the usual layout of image models
  serving_nhw:     images uint8 [N, 28, 28], MNIST's own arrays without a channel axis
Normalisation happens inside (pixels.normalize), and the class names travel
as the asset `class_names.txt`, so the model loads and runs with plain
TensorFlow in a program that never imports tfmnist.
"""

import json
import os
import shutil

import keras
import tensorflow as tf

from tfmnist import files, hardware, models, run_dir
from tfmnist.data import pixels
from tfmnist.errors import DataError
from tfmnist.training import checkpoints as checkpoints_lib
from tfmnist.training import config as config_lib

CLASS_NAMES_FILE = "class_names.txt"


def _probabilities(member, images):
  """float32 probabilities of uint8 [N, 28, 28, 1] images from one member.

  A member is a Keras model (normalised images in, logits out) or a loaded
  tfmnist SavedModel (its `serve` takes the uint8 images).
  """
  if isinstance(member, keras.Model):
    logits = member(pixels.normalize(images), training=False)
    return tf.nn.softmax(tf.cast(logits, tf.float32))
  return member.serve(images)["probabilities"]


def _probabilities_of_pixels(member, pixel_values):
  """`_probabilities` of float32 pixel values in [0, 255], with no uint8 step in between."""
  if isinstance(member, keras.Model):
    return _probabilities(member, pixel_values)  # normalize() scales floats as it does uint8.
  if hasattr(member, "probabilities_of_pixels"):
    return member.probabilities_of_pixels(pixel_values)
  # An export from before its float function: through its uint8 signature.
  return member.serve(tf.cast(tf.round(tf.clip_by_value(pixel_values, 0, 255)), tf.uint8))[
      "probabilities"]


# The image as it is: the one view of a model without test-time augmentation.
IDENTITY_VIEW = ((0, 0, False),)


def view(images, dx, dy, mirrored=False):
  """[N, H, W, C] images of any dtype moved by whole pixels, then mirrored left-right.

  dx > 0 moves the content right and dy > 0 down; zeros fill what it leaves.
  The in-graph twin of serving.inference.shift_view, built from padding and
  slicing, which LiteRT runs as builtin ops.
  """
  if dx or dy:
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [max(dy, 0), max(-dy, 0)], [max(dx, 0), max(-dx, 0)],
                             [0, 0]])
    top, left = max(-dy, 0), max(-dx, 0)
    images = padded[:, top:top + height, left:left + width, :]
  if mirrored:
    images = tf.reverse(images, axis=[2])
  return images


class ServingModule(tf.Module):
  """Wraps a trained model, or several averaged, behind the serving signatures.

  Members may be Keras models or loaded tfmnist SavedModels (an ensemble of
  exported runs). `views` ((dx, dy, mirrored) each; None: the image alone)
  puts test-time augmentation inside: every signature averages the
  members' probabilities over those views of its images.
  """

  def __init__(self, models, class_names_path, temperature=1.0, weights=None, views=None):
    super().__init__(name="tfmnist")
    self.models = list(models)
    # Python tuples: the views are unrolled into the graph.
    self.views = tuple(tuple(v) for v in views) if views else IDENTITY_VIEW
    self.temperature = float(temperature)
    # Python floats: they go into the graph as constants, not as variables.
    self.weights = None if weights is None else [float(w) for w in weights]
    self.class_names_file = tf.saved_model.Asset(class_names_path)
    with open(class_names_path) as f:
      self.class_names = tf.constant([line.rstrip("\n") for line in f])

  @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.uint8, name="images")],
               autograph=False)
  def serve(self, images):
    """Probabilities and classes of uint8 images [N, 28, 28, 1] (`serving_default`)."""
    images = _checked(images, (28, 28, 1), "serving_nhw takes [N, 28, 28]")
    probabilities = self._combined(lambda x: [_probabilities(m, x) for m in self.models], images)
    return {"probabilities": probabilities,
            "classes": tf.argmax(probabilities, axis=-1)}

  @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="pixels")],
               autograph=False)
  def probabilities_of_pixels(self, pixel_values):
    """Probabilities of float32 pixel values in [0, 255], [N, 28, 28, 1]: what LiteRT runs.

    The graph that serving.litert converts: the same arithmetic as `serve`,
    with neither the uint8 input (a quantized model takes its own) nor the
    shape assertion (an op LiteRT lacks). Not a signature: TF Serving
    clients see only the uint8 ones.
    """
    return self._combined(lambda x: [_probabilities_of_pixels(m, x) for m in self.models],
                          pixel_values)

  def _combined(self, members_probabilities, images):
    """The members' (weighted) mean probabilities, averaged over the views of `images`,
    temperature-scaled when one was fitted.

    `members_probabilities(images)` gives each member's probabilities of `images`.
    """
    means = []
    for dx, dy, mirrored in self.views:
      probabilities = members_probabilities(view(images, dx, dy, mirrored))
      if self.weights is None:
        means.append(tf.add_n(probabilities) / len(probabilities))
      else:
        means.append(tf.add_n([w * p for w, p in zip(self.weights, probabilities)]))
    mean = means[0] if len(means) == 1 else tf.add_n(means) / len(means)
    if self.temperature != 1.0:  # Temperature scaling, as metrics.apply_temperature.
      mean = tf.nn.softmax(tf.math.log(tf.maximum(mean, 1e-30)) / self.temperature)
    return mean

  @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")],
               autograph=False)
  def serve_nhw(self, images):
    """`serve` of uint8 images [N, 28, 28], without the channel axis (`serving_nhw`)."""
    images = _checked(images, (28, 28), "serving_default takes [N, 28, 28, 1]")
    return self.serve(tf.expand_dims(images, -1))


def _checked(images, shape, other):
  """`images`, after an assertion that each one has `shape`, whatever the caller passed.

  TensorFlow does not check a loaded signature's input shape (TF Serving
  neither), so a wrong one would otherwise fail deep inside the model, or
  not at all. The check is an Assert, which TFLite's converter drops. Both
  shapes are padded with -1 (never a size) to one length, so that a wrong
  rank fails the comparison instead of the op that compares.
  """
  message = f"images must be uint8 [N, {', '.join(map(str, shape))}] ({other})"
  length = len(shape) + 1
  actual = tf.concat([tf.shape(images)[1:], tf.fill([length], -1)], 0)[:length]
  expected = tf.constant([*shape, -1])
  ok = tf.reduce_all(tf.equal(actual, expected))
  with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
    return tf.identity(images)


def export(models, class_names, export_dir, manifest=None, temperature=1.0, weights=None,
           views=None):
  """Writes the SavedModel to `export_dir` atomically (temporary folder, rename).

  Args:
    models: one Keras model or loaded tfmnist SavedModel, or a list of them
      whose probabilities are averaged.
    class_names: names in label order.
    export_dir: destination; replaced if it exists.
    manifest: a dict written beside the model as manifest.json (an
      ensemble's settings), or None.
    temperature: divides the log of the averaged probabilities before a
      softmax (temperature scaling); 1 leaves them as they are.
    weights: each model's share of the average (summing to 1); None: equal.
    views: test-time views (dx, dy, mirrored) the export averages over
      (serving.inference.tta_views); None: the image alone.
  """
  if not isinstance(models, (list, tuple)):
    models = [models]
  with files.atomic_folder(export_dir, overwrite=True) as tmp:
    names_path = os.path.join(tmp, "assets.tmp", CLASS_NAMES_FILE)
    os.makedirs(os.path.dirname(names_path))
    with open(names_path, "w") as f:
      f.write("".join(f"{name}\n" for name in class_names))
    module = ServingModule(models, names_path, temperature, weights, views)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve,
                                                  "serving_nhw": module.serve_nhw})
    shutil.rmtree(os.path.dirname(names_path))
    if manifest is not None:
      with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
  return export_dir


# ----------------------------------------------------------------------------
# Exporting a checkpoint
# ----------------------------------------------------------------------------


def graph_dtypes(export_dir):
  """The names of the tensor dtypes that an export's graph and functions use."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
    saved.ParseFromString(f.read())
  graph = saved.meta_graphs[0].graph_def
  found = set()
  for node in list(graph.node) + [n for f in graph.library.function for n in f.node_def]:
    for value in node.attr.values():
      if value.type:
        found.add(tf.as_dtype(value.type).name)
      found.update(tf.as_dtype(t).name for t in value.list.type)
  return found


def checkpoint_path(model_dir, checkpoint):
  """The checkpoint prefix that "latest", "best" or a path names in a run folder.

  Raises:
    DataError: there is no such checkpoint.
  """
  folders = {"latest": run_dir.RunDir(model_dir).checkpoints,
             "best": run_dir.RunDir(model_dir).best}
  if checkpoint in folders:
    path = tf.train.latest_checkpoint(folders[checkpoint])
    if path is None:
      raise DataError(f"{folders[checkpoint]}: no checkpoint to export")
    return path
  if not tf.io.gfile.exists(checkpoint + ".index"):
    raise DataError(f"{checkpoint}: no such checkpoint (expected {checkpoint}.index)")
  return checkpoint


def _build(model_name, num_classes, policy):
  """A new model of the registry, built, whose layers compute under the dtype `policy`."""
  previous = keras.mixed_precision.global_policy()
  try:
    keras.mixed_precision.set_global_policy(policy)
    model = models.create(model_name, num_classes)
    model(tf.zeros([1, 28, 28, 1]), training=False)
  finally:
    keras.mixed_precision.set_global_policy(previous)
  return model


def float32_twin(model, model_name, num_classes):
  """`model` when it computes in float32, else a float32 model holding its weights.

  The export computes in float32 whatever precision trained it, so that it
  runs anywhere (LiteRT, CPUs without bfloat16, TF Serving on any device):
  mixed precision keeps its variables in float32 already, so the twin gets
  the same values and only the arithmetic changes.
  """
  if model.compute_dtype == "float32":
    return model
  return float32_copy(model, model_name, num_classes)


def float32_copy(model, model_name, num_classes):
  """A new float32 model, outside any strategy, holding `model`'s weights."""
  copy = _build(model_name, num_classes, "float32")
  copy.set_weights(model.get_weights())
  return copy


def restore_model(config, checkpoint, num_classes, policy="float32"):
  """The run's model with one checkpoint's weights, its weight average when it kept one.

  Builds the model from `config` alone: no records, no strategy and no
  optimizer are needed. Variables are float32 under every policy, so any
  checkpoint restores under any `policy`.

  Args:
    config: the run's TrainConfig.
    checkpoint: "latest", "best" or a checkpoint path.
    num_classes: the run's number of classes.
    policy: the dtype policy the model computes under.

  Returns:
    (the Keras model, the checkpoint path).

  Raises:
    DataError: no such checkpoint, or it is not one of this model.
  """
  path = checkpoint_path(config.model_dir, checkpoint)
  model = _build(config.model, num_classes, policy)
  saved = {"model": model}
  weight_average = config_lib.weight_average(config, model.variables, steps_per_epoch=1)
  if weight_average is not None:
    saved["weight_average"] = weight_average
  try:
    tf.train.Checkpoint(**saved).restore(path).expect_partial() \
        .assert_existing_objects_matched()
  except checkpoints_lib.RESTORE_ERRORS as e:
    raise DataError(f"{path}: cannot restore this run's model from it "
                    f"({str(e).splitlines()[0]})") from None
  if weight_average is not None:  # For good: this model only serves.
    weight_average.copy_to(model.variables)
  return model, path


def export_checkpoint(config, checkpoint, export_dir, class_names):
  """Exports one checkpoint of a run as a float32 SavedModel (its weight average if it kept one).

  Args:
    config: the run's TrainConfig with its precision resolved (config.json).
    checkpoint: "latest", "best" or a checkpoint path.
    export_dir: where the SavedModel goes (replaced if it exists).
    class_names: the classes in label order.

  Returns:
    The checkpoint path exported.

  Raises:
    DataError: the folder holds another run (config.check_same_run), has no
      such checkpoint, or it is not one of this model.
  """
  recorded = run_dir.RunDir(config.model_dir).read_manifest().get("precision")
  policy, _ = config_lib.resolve_precision(config.precision, recorded, hardware.detect())
  config_lib.check_same_run(config, {"requested": config.precision, "policy": policy},
                            class_names)
  model, path = restore_model(config, checkpoint, len(class_names))
  export(model, class_names, export_dir)
  return path
