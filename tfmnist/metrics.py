"""Classification metrics of a trained model's predicted probabilities (numpy only).

Everything here takes integer labels [N] and probabilities [N, C] (rows of a
softmax) and returns plain numbers or arrays, so that an evaluation can write
them to JSON and draw them without TensorFlow.
"""

import numpy as np

# Floor of the probability of the true class in the cross-entropy, as Keras
# clips it: a confidently wrong prediction costs -log(1e-7) ~ 16, not infinity.
_LOG_FLOOR = 1e-7
# A row of a float32 softmax sums to 1 within ~1e-6; logits or unnormalised
# scores miss by far more, and would make every number below meaningless.
_ROW_SUM_TOLERANCE = 1e-3
# How many offending values an error message lists.
_SHOWN = 10


def _shown(values):
  """The first few of `values` as a list for an error message."""
  values = np.asarray(values).ravel()
  if len(values) > _SHOWN:
    return f"{values[:_SHOWN].tolist()} ... ({len(values)} in all)"
  return str(values.tolist())


def _class_indices(values, num_classes, what):
  """`values` as an int64 vector, checked to be class indices in [0, num_classes)."""
  array = np.asarray(values)
  if array.ndim != 1:
    raise ValueError(f"{what} must be a vector, got shape {array.shape}")
  if array.size == 0:
    return array.astype(np.int64)
  if not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"{what} must be integers, got dtype {array.dtype}: {_shown(array)}")
  outside = array[(array < 0) | (array >= num_classes)]
  if outside.size:
    raise ValueError(f"{what} must be in [0, {num_classes}), got {_shown(np.unique(outside))}")
  return array.astype(np.int64)


def _checked(labels, probabilities, num_classes=None):
  """(labels int64 [N], probabilities float64 [N, C]) after checking their shapes and rows."""
  probabilities = np.asarray(probabilities, np.float64)
  if probabilities.ndim != 2:
    raise ValueError(f"probabilities must be [N, classes], got shape {probabilities.shape}")
  if num_classes is not None and probabilities.shape[1] != num_classes:
    raise ValueError(f"probabilities have {probabilities.shape[1]} columns but there are "
                     f"{num_classes} class names")
  if len(probabilities) == 0:
    raise ValueError(f"no examples: probabilities have shape {probabilities.shape}")
  labels = _class_indices(labels, probabilities.shape[1], "labels")
  if len(labels) != len(probabilities):
    raise ValueError(f"{len(labels)} labels but {len(probabilities)} rows of probabilities")
  if not np.all(np.isfinite(probabilities)):
    raise ValueError(f"probabilities are not all finite: rows "
                     f"{_shown(np.flatnonzero(~np.isfinite(probabilities).all(axis=1)))}")
  if probabilities.min() < 0.0 or probabilities.max() > 1.0:
    raise ValueError(f"probabilities must be in [0, 1], got min {probabilities.min():g} and "
                     f"max {probabilities.max():g} (logits instead of a softmax?)")
  sums = probabilities.sum(axis=1)
  bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOLERANCE)
  if bad.size:
    raise ValueError(f"rows of probabilities must sum to 1; rows {_shown(bad)} sum to "
                     f"{_shown(np.round(sums[bad], 6))}")
  return labels, probabilities


def _ratio(numerator, denominator):
  """numerator / denominator elementwise, 0 where the denominator is 0."""
  numerator = np.asarray(numerator, np.float64)
  denominator = np.asarray(denominator, np.float64)
  return np.divide(numerator, denominator, out=np.zeros_like(numerator),
                   where=denominator != 0)


def confusion_matrix(labels, predictions, num_classes):
  """Counts of (true class, predicted class) pairs.

  Args:
    labels: [N] true classes in [0, num_classes).
    predictions: [N] predicted classes in [0, num_classes).
    num_classes: C, the number of classes.

  Returns:
    int64 [C, C]: entry [t, p] counts the examples of class t predicted as p,
    so rows sum to the class supports and the diagonal holds the hits.

  Raises:
    ValueError: a label or prediction outside [0, C), or different lengths.
  """
  if num_classes < 1:
    raise ValueError(f"num_classes must be at least 1, got {num_classes}")
  labels = _class_indices(labels, num_classes, "labels")
  predictions = _class_indices(predictions, num_classes, "predictions")
  if len(labels) != len(predictions):
    raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
  flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def reliability_bins(labels, probabilities, num_bins=15):
  """Accuracy against confidence in equal-width bins of the top probability.

  An example falls in bin b when edges[b] < confidence <= edges[b + 1] (the
  first bin also takes confidence 0), the usual convention of the expected
  calibration error.

  Args:
    labels: [N] true classes.
    probabilities: [N, C] rows of a softmax.
    num_bins: B, the number of bins splitting [0, 1].

  Returns:
    A dict of numpy arrays:
      "edges": float64 [B + 1], 0 to 1.
      "count": int64 [B], examples per bin.
      "confidence": float64 [B], mean top probability of the bin's examples.
      "accuracy": float64 [B], fraction of them predicted right.
    Empty bins have count 0 and confidence and accuracy 0, never NaN.

  Raises:
    ValueError: bad shapes, labels or probabilities, or num_bins < 1.
  """
  if num_bins < 1:
    raise ValueError(f"num_bins must be at least 1, got {num_bins}")
  labels, probabilities = _checked(labels, probabilities)
  confidence = probabilities.max(axis=1)
  correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # searchsorted(side="left") puts a confidence equal to an edge in the bin
  # below it, which makes the bins (lower, upper].
  index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
  count = np.bincount(index, minlength=num_bins).astype(np.int64)
  return {
      "edges": edges,
      "count": count,
      "confidence": _ratio(np.bincount(index, confidence, minlength=num_bins), count),
      "accuracy": _ratio(np.bincount(index, correct, minlength=num_bins), count),
  }


def expected_calibration_error(bins):
  """The ECE of `reliability_bins`: sum over bins of |accuracy - confidence| * share of examples.

  Args:
    bins: the dict returned by `reliability_bins`.

  Returns:
    A float in [0, 1]; 0 for a perfectly calibrated model.
  """
  count = np.asarray(bins["count"], np.float64)
  gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))
  return float(np.sum(gap * count) / max(count.sum(), 1.0))


def log_loss(labels, probabilities):
  """Mean cross-entropy -log(p[true class]), p floored at 1e-7."""
  labels, probabilities = _checked(labels, probabilities)
  true_probability = probabilities[np.arange(len(labels)), labels]
  return float(np.mean(-np.log(np.maximum(true_probability, _LOG_FLOOR))))


def _log_probabilities(probabilities):
  return np.log(np.maximum(np.asarray(probabilities, np.float64), 1e-30))


def _scaled_log_softmax(log_probabilities, temperature):
  """log softmax(log_probabilities / temperature), computed stably."""
  logits = log_probabilities / temperature
  logits = logits - logits.max(axis=1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def apply_temperature(probabilities, temperature):
  """softmax(log(probabilities) / temperature): T > 1 softens, T < 1 sharpens; argmax is kept."""
  return np.exp(_scaled_log_softmax(_log_probabilities(probabilities), temperature)).astype(
      np.float32)


def fit_temperature(labels, probabilities, low=0.05, high=20.0, iterations=80):
  """The temperature in [low, high] that minimises the cross-entropy (temperature scaling).

  Guo et al. 2017: one scalar divides the logits (here the log-probabilities,
  so averaged ensembles calibrate too). The loss is unimodal in log T, so a
  golden-section search over log T finds the minimum.

  Args:
    labels: [N] true classes of held-out images the model did not learn from.
    probabilities: [N, C] the model's probabilities of them.
    low, high: the range searched.
    iterations: golden-section steps; 80 narrow the range below 1e-15 of its log.

  Returns:
    The temperature, a float.

  Raises:
    ValueError: bad shapes, labels or probabilities.
  """
  labels, probabilities = _checked(labels, probabilities)
  log_p = _log_probabilities(probabilities)
  rows = np.arange(len(labels))

  def loss(log_t):
    return float(-np.mean(_scaled_log_softmax(log_p, np.exp(log_t))[rows, labels]))

  ratio = (np.sqrt(5.0) - 1.0) / 2.0
  a, b = np.log(low), np.log(high)
  c, d = b - ratio * (b - a), a + ratio * (b - a)
  loss_c, loss_d = loss(c), loss(d)
  for _ in range(iterations):
    if loss_c <= loss_d:
      b, d, loss_d = d, c, loss_c
      c = b - ratio * (b - a)
      loss_c = loss(c)
    else:
      a, c, loss_c = c, d, loss_d
      d = a + ratio * (b - a)
      loss_d = loss(d)
  return float(np.exp((a + b) / 2.0))


def _per_class(matrix, class_names):
  """[{"class", "name", "support", "precision", "recall", "f1"}] and the macro F1."""
  hits = np.diag(matrix)
  support = matrix.sum(axis=1)
  predicted = matrix.sum(axis=0)
  precision = _ratio(hits, predicted)
  recall = _ratio(hits, support)
  f1 = _ratio(2 * precision * recall, precision + recall)
  rows = [{"class": c, "name": str(class_names[c]), "support": int(support[c]),
           "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c])}
          for c in range(len(class_names))]
  # A class that is neither in the labels nor predicted has no F1 at all (0/0);
  # averaging its 0 in would punish the model for the make-up of the split.
  seen = (support + predicted) > 0
  return rows, float(f1[seen].mean())


def classification_metrics(labels, probabilities, class_names, num_bins=15):
  """The metrics of predicted probabilities against true labels, ready for json.dump.

  Args:
    labels: [N] true classes in [0, C).
    probabilities: [N, C] rows of a softmax; the prediction is the argmax.
    class_names: C names, index = class.
    num_bins: bins of the expected calibration error (see `reliability_bins`).

  Returns:
    A dict of Python numbers and lists:
      "count": N; "accuracy"; "error_count": wrong predictions;
      "loss": mean cross-entropy -log(p[true class]), p floored at 1e-7;
      "expected_calibration_error": of `reliability_bins(..., num_bins)`;
      "per_class": C dicts {"class", "name", "support", "precision", "recall",
        "f1"}, with 0 for a precision, recall or F1 that divides by zero;
      "macro_f1": mean F1 over the classes that are in the labels or the
        predictions;
      "confusion_matrix": [C][C] counts, rows = true class, columns = predicted.

  Raises:
    ValueError: probabilities not [N, len(class_names)], N = 0, labels of
      another length or outside [0, C), or rows that are not probabilities.
  """
  labels, probabilities = _checked(labels, probabilities, len(class_names))
  predictions = probabilities.argmax(axis=1)
  matrix = confusion_matrix(labels, predictions, len(class_names))
  per_class, macro_f1 = _per_class(matrix, class_names)
  hits = int(np.trace(matrix))
  return {
      "count": len(labels),
      "accuracy": hits / len(labels),
      "error_count": len(labels) - hits,
      "loss": log_loss(labels, probabilities),
      "expected_calibration_error": expected_calibration_error(
          reliability_bins(labels, probabilities, num_bins)),
      "per_class": per_class,
      "macro_f1": macro_f1,
      "confusion_matrix": matrix.tolist(),
  }


def top_mistakes(labels, probabilities, n):
  """The wrong predictions made with the most confidence.

  Args:
    labels: [N] true classes.
    probabilities: [N, C] rows of a softmax.
    n: how many to return at most.

  Returns:
    int64 [min(n, number wrong)] indices into labels, highest top probability
    first; equal probabilities keep their order in the data.

  Raises:
    ValueError: bad shapes, labels or probabilities, or n < 0.
  """
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  labels, probabilities = _checked(labels, probabilities)
  wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
  confidence = probabilities[wrong].max(axis=1)
  order = np.argsort(-confidence, kind="stable")
  return wrong[order[:n]].astype(np.int64)
