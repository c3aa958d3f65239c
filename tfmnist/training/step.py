"""The traced update and evaluation steps.

`make_train_loop` returns the inner loop: a `tf.function` that runs a tensor
count of train steps with `strategy.run`, so it is traced once. Each step
augments its replica's rows of the global batch, computes the loss averaged
over the global batch under a GradientTape, optionally clips the summed
gradient, and applies it (the optimizer sums the replicas' gradients).

Every traced function of tfmnist is traced with autograph off: their Python
`if`s and loops test Python values only (the config, the layer list), and
the one loop over a tensor count is an explicit `tf.while_loop`. Autograph
would otherwise rewrite the source of every function the step calls, the
augmentation and the model included, at the start of every run: about 3 s
of a one-epoch run on a 2-core CPU, longer than its validation.
"""

import numpy as np
import tensorflow as tf

from tfmnist.data import augment as augment_lib
from tfmnist.data import pixels
from tfmnist.models.layers import Noise


def make_train_loop(config, run, per_replica_batch_size):
  """The traced inner loop: `loop(iterator, num_steps)` -> losses of each step."""
  strategy, model, optimizer = run.strategy, run.model, run.optimizer
  global_batch = config.global_batch_size
  loss_scaling = config.precision == "mixed_float16"

  def clip(grads):
    # The clip factor comes from the norm of the summed gradient, which is
    # what one replica would clip on; the optimizer then sums the scaled
    # per-replica gradients.
    context = tf.distribute.get_replica_context()
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    norm = tf.linalg.global_norm(total)
    if loss_scaling:
      # The gradients are loss-scaled until the optimizer divides them: clip
      # on the true norm. An overflow (inf norm) gives NaN gradients, which
      # the LossScaleOptimizer skips while it lowers the scale.
      norm = norm / tf.cast(optimizer.dynamic_scale, norm.dtype)
    factor = tf.minimum(1.0, config.clip_norm / tf.maximum(norm, 1e-12))
    return [g * factor for g in grads]

  def train_step(batch, step):
    """One update; runs in replica context."""
    # Multi-worker input leaves the batch dimension unknown (it allows for a
    # short last batch, which this pipeline never has); augmentation and the
    # noise take this replica's rows of the global draws by the static size.
    batch = tf.nest.map_structure(
        lambda t: tf.ensure_shape(t, [per_replica_batch_size] + t.shape[1:].as_list()), batch)
    context = tf.distribute.get_replica_context()
    offset = context.replica_id_in_sync_group * per_replica_batch_size
    images, labels = augment_lib.training_inputs(batch, config.augment, config.seed, step,
                                                 offset, global_batch)
    noise = Noise(tf.random.experimental.stateless_fold_in(
        tf.constant([config.seed, 0x5EED], tf.int64), step), offset, global_batch)
    with tf.GradientTape() as tape:
      logits = model(images, training=True, noise=noise)
      depth = logits.shape[-1]
      targets = tf.one_hot(labels, depth)
      if config.label_smoothing:
        targets = targets * (1 - config.label_smoothing) + config.label_smoothing / depth
      per_example = tf.nn.softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))
      # Average over the global batch: the optimizer sums the replicas' gradients.
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
      scaled = optimizer.scale_loss(loss) if loss_scaling else loss
    grads = tape.gradient(scaled, model.trainable_variables)
    if config.clip_norm:
      grads = clip(grads)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    if run.weight_average is not None:
      run.weight_average.update(model.variables, step)
    run.train_loss.update_state(per_example)
    run.train_accuracy.update_state(labels, logits)
    return loss

  @tf.function(autograph=False)
  def train_loop(iterator, num_steps):
    """Runs `num_steps` steps; cross-replica context. Returns each step's loss."""

    def body(i, losses):
      per_replica = strategy.run(train_step, args=(next(iterator), run.step.read_value()))
      losses = losses.write(i, strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, None))
      run.step.assign_add(1)
      return i + 1, losses

    _, losses = tf.while_loop(lambda i, _: i < num_steps, body,
                              (tf.constant(0), tf.TensorArray(tf.float32, size=num_steps)))
    return losses.stack()

  return train_loop


def make_eval_fn(run):
  """Traced evaluation step over one distributed batch; cross-replica context."""
  strategy, model = run.strategy, run.model

  def eval_step(batch):
    logits = tf.cast(model(pixels.normalize(batch["image"]), training=False), tf.float32)
    mask = batch["mask"]
    labels = tf.maximum(batch["label"], 0)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    predictions = tf.argmax(logits, -1, output_type=tf.int32)
    correct = tf.cast(tf.equal(predictions, batch["label"]), tf.float32)
    sums = tf.stack([tf.reduce_sum(per_example * mask), tf.reduce_sum(correct * mask),
                     tf.reduce_sum(mask)])
    return sums, predictions, batch["label"], batch["index"], mask

  @tf.function(autograph=False)
  def eval_batch(batch):
    sums, predictions, labels, index, mask = strategy.run(eval_step, args=(batch,))
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, sums, None),
            strategy.gather(predictions, 0), strategy.gather(labels, 0),
            strategy.gather(index, 0), strategy.gather(mask, 0))

  return eval_batch


def evaluate(run, eval_fn, dataset):
  """Loss, accuracy and the mistakes over a distributed eval dataset.

  Returns:
    ({"loss", "accuracy", "count"}, {"index", "label", "prediction"} of mistakes)
  """
  totals = np.zeros(3)
  wrong = {"index": [], "label": [], "prediction": []}
  for batch in dataset:
    sums, predictions, labels, index, mask = eval_fn(batch)
    totals += sums.numpy()
    keep = (mask.numpy() > 0) & (predictions.numpy() != labels.numpy())
    wrong["index"].append(index.numpy()[keep])
    wrong["label"].append(labels.numpy()[keep])
    wrong["prediction"].append(predictions.numpy()[keep])
  loss_sum, correct, count = totals
  metrics = {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1),
             "count": int(count)}
  return metrics, {k: np.concatenate(v) for k, v in wrong.items()}
