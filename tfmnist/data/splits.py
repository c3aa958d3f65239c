"""Seeded, class-stratified choices of rows: the validation split and the robustness images."""

import numpy as np

from tfmnist.errors import DataError


def stratified_split(labels, size, seed):
  """Indices (keep, held_out) with `size` held out in class proportions.

  Args:
    labels: int array [N].
    size: fraction of N when < 1, else a count.
    seed: shuffling seed.

  Returns:
    Two sorted index arrays; every class keeps its share of the held-out part
    (largest remainders decide the rounding).
  """
  n = len(labels)
  count = int(round(size * n)) if size < 1 else int(size)
  if count < 0 or count >= n:
    raise DataError(f"validation_size {size} must leave examples for training (N={n})")
  if count == 0:
    return np.arange(n), np.arange(0)
  classes, class_counts = np.unique(labels, return_counts=True)
  exact = class_counts * count / n
  take = np.floor(exact).astype(np.int64)
  remainder_order = np.argsort(-(exact - take), kind="stable")
  take[remainder_order[:count - take.sum()]] += 1
  rng = np.random.default_rng(seed)
  held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
  held = np.sort(np.concatenate(held))
  keep = np.setdiff1d(np.arange(n), held, assume_unique=True)
  return keep, held
