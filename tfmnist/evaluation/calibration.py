"""Temperature scaling of a model's or an ensemble's probabilities (Guo et al. 2017).

`calibrate` fits one temperature on a labelled split that no member learned
from; the Ensemble then divides its log-probabilities by it, in predictions
and in its export. It changes no prediction, only how sure each one is.
"""

from tfmnist import metrics
from tfmnist.errors import DataError
from tfmnist.evaluation import report


def calibrate(ensemble, split, batch_size=1000, tta=False):
  """Fits `ensemble.temperature` on `split` of the dataset its members trained on.

  Args:
    ensemble: an inference.Ensemble with settings (dataset, records folder and
      the splits its members trained on).
    split: the held-out split, e.g. "validation".
    batch_size: images per model call.
    tta: fit on the averages over the test-time views (inference.tta_views;
      mirror images when the dataset is not digits), the probabilities that
      the temperature will then scale.

  Returns:
    (images, log loss before, log loss after) on the split's images.

  Raises:
    DataError: the members name no one dataset, or trained on `split`.
  """
  settings = ensemble.settings
  if not (settings and settings.dataset and settings.records_dir):
    raise DataError("the models' manifests name no one dataset and records folder to "
                    "calibrate on")
  if split in settings.train_splits:
    raise DataError(f"the models trained on {split}; calibrate on a split none of them "
                    "learned from")
  info, images, labels = report.read_split_for(ensemble, settings.records_dir,
                                               settings.dataset, split)
  # The probabilities before any temperature, over the views predictions will use.
  plain = ensemble.average(images, batch_size, tta, mirror=not info["digits"])
  ensemble.temperature = metrics.fit_temperature(labels, plain)
  ensemble.calibrated_on = (f"{settings.dataset} {split}"
                            f"{' with test-time augmentation' if tta else ''}")
  scaled = metrics.apply_temperature(plain, ensemble.temperature)
  return len(labels), metrics.log_loss(labels, plain), metrics.log_loss(labels, scaled)
