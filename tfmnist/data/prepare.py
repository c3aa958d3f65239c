"""Turns a dataset from any supported source into sharded TFRecords.

`make_records(config)` is the library function behind tools/make_records.py
and the automatic preparation in training: read the source, carve a
stratified validation split out of train, write every split as shards into a
temporary folder with `info.json`, and rename the folder into place.
"""

import dataclasses
import datetime
import json
import os
from typing import Optional

import numpy as np
from absl import logging

import tfmnist
from tfmnist import files
from tfmnist.data import checks, records
from tfmnist.data import splits as splits_lib
from tfmnist.data.catalog import IMAGE_SHAPE, get_spec
from tfmnist.data.sources import RawSplit
from tfmnist.data.sources import csv as csv_source
from tfmnist.data.sources import download, idx, npz
from tfmnist.data.sources import tfds as tfds_source
from tfmnist.errors import DataError
from tfmnist.progress import Progress

SOURCES = ("tfds", "url", "idx", "csv", "npz")


@dataclasses.dataclass
class PrepareConfig:
  """How to make the records of one dataset (see tools/make_records.py flags)."""
  dataset: str
  source: str = ""  # One of SOURCES; empty infers it from the other fields.
  source_dir: str = ""
  train_csv: str = ""
  test_csv: str = ""
  extra_csv: tuple = ()  # "split=path" pairs, e.g. "dig=Dig-MNIST.csv".
  output_dir: str = "records"
  validation_size: float = 0.1  # Fraction of train when < 1, else a count.
  num_shards: int = 8  # Shards of the train split; others get as many per image.
  overwrite: bool = False
  seed: int = 0
  download_base_url: str = ""
  cache_dir: str = ""
  tfds_data_dir: str = ""
  label_column: str = ""
  id_column: str = ""
  class_names: tuple = ()
  transpose: Optional[bool] = None  # Override the dataset's IDX orientation.
  label_offset: Optional[int] = None  # The raw label of class 0; None: the dataset's.
  show_progress: bool = True


def infer_source(config):
  """The source implied by the given paths, or the built-in default."""
  if config.source:
    if config.source not in SOURCES:
      raise DataError(f"unknown source {config.source!r}; choose one of {', '.join(SOURCES)}")
    return config.source
  if config.train_csv or config.test_csv or config.extra_csv:
    return "csv"
  if config.source_dir:
    path = config.source_dir
    if path.endswith(".npz") or (os.path.isdir(path) and any(
        n.endswith(".npz") for n in os.listdir(path))):
      return "npz"
    return "idx"
  return "url" if download.mirror_base_url(config.download_base_url) else "tfds"


def load_source(config, spec):
  """Reads every split of the configured source.

  Returns:
    {split: RawSplit}.
  """
  source = infer_source(config)
  if source == "csv":
    csvs = [("train", config.train_csv), ("test", config.test_csv)]
    for pair in config.extra_csv:
      name, sep, path = pair.partition("=")
      if not sep or not name or not path:
        raise DataError(f"extra_csv {pair!r}: expected split=path")
      csvs.append((name, path))
    splits = {}
    for split, path in csvs:
      if path:
        splits[split] = csv_source.read_csv(path, spec.num_classes,
                                            config.label_column or None,
                                            config.id_column or None, spec.label_offset)
    if not splits:
      raise DataError("source=csv needs train_csv and/or test_csv")
    return splits
  if source in ("idx", "npz"):
    if not config.source_dir:
      raise DataError(f"source={source} needs source_dir")
    if source == "idx":
      return idx.load_idx_dir(config.source_dir, spec)
    return npz.load_npz(config.source_dir, spec)
  base_url = download.mirror_base_url(config.download_base_url)
  if source == "tfds":
    try:
      return tfds_source.load_tfds(spec, config.tfds_data_dir or None)
    except Exception as e:  # pylint: disable=broad-except
      if not spec.files:
        raise
      logging.warning("tensorflow-datasets could not provide %s (%s); "
                      "downloading the official files instead", spec.name,
                      str(e).splitlines()[0] if str(e) else type(e).__name__)
  return download.download_official(spec, base_url, config.cache_dir or None,
                                    config.show_progress)


def _image_keys(images):
  flat = np.ascontiguousarray(images).reshape(len(images), -1)
  return flat.view(np.dtype((np.void, flat.shape[1]))).ravel()


def duplicate_counts(splits):
  """Exact duplicate images within each split and across each pair of splits.

  Returns:
    {"within": {split: n}, "across": {"a/b": images of b also in a}}.
  """
  keys = {name: _image_keys(s.images) for name, s in splits.items()}
  within = {name: int(len(k) - len(np.unique(k))) for name, k in keys.items()}
  across = {}
  names = list(splits)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      _, inverse = np.unique(np.concatenate([keys[a], keys[b]]), return_inverse=True)
      across[f"{a}/{b}"] = int(np.isin(inverse[len(keys[a]):], inverse[:len(keys[a])]).sum())
  return {"within": within, "across": across}


def pixel_statistics(images):
  """Mean and standard deviation of the pixels scaled to [0, 1].

  Computed from the 256-bin histogram: exact, and no float copy of the images.
  """
  hist = np.bincount(images.ravel(), minlength=256).astype(np.float64)
  values = np.arange(256) / 255.0
  mean = (hist * values).sum() / hist.sum()
  std = np.sqrt((hist * (values - mean) ** 2).sum() / hist.sum())
  return float(mean), float(std)


def _split_summary(raw, num_classes):
  summary = {"count": len(raw), "labeled": raw.labels is not None}
  if raw.labels is not None:
    summary["label_histogram"] = np.bincount(raw.labels, minlength=num_classes).tolist()
  return summary


def _take(raw, order):
  return RawSplit(raw.images[order], None if raw.labels is None else raw.labels[order],
                  None if raw.ids is None else raw.ids[order], raw.files)


_SOURCE_FIELDS = ("source", "source_dir", "train_csv", "test_csv", "extra_csv")


def _absolute(path):
  return os.path.abspath(path) if path else ""


def request_of(config):
  """The settings of `config` that decide what make_records writes (for info.json)."""
  return {
      "source": config.source,
      "source_dir": _absolute(config.source_dir),
      "train_csv": _absolute(config.train_csv),
      "test_csv": _absolute(config.test_csv),
      "extra_csv": [f"{n}={_absolute(p)}" for n, _, p in
                    (pair.partition("=") for pair in config.extra_csv)],
      "validation_size": config.validation_size,
      "num_shards": config.num_shards,
      "seed": config.seed,
      "label_column": config.label_column,
      "id_column": config.id_column,
      "class_names": list(config.class_names),
      "transpose": config.transpose,
      "label_offset": config.label_offset,
  }


def rebuild_command(config):
  """The make_records command that writes these records again, over the old ones."""
  request = request_of(config)
  parts = ["python tools/make_records.py", f"--dataset={config.dataset}",
           f"--output_dir={config.output_dir}"]
  for key, value in request.items():
    default = getattr(PrepareConfig, key, None) if key != "extra_csv" else ()
    if key == "extra_csv":
      parts += [f"--extra_csv={pair}" for pair in value]
    elif key == "class_names":
      parts += [f"--class_names={','.join(value)}"] if value else []
    elif key == "transpose":
      parts += [] if value is None else [f"--transpose={'yes' if value else 'no'}"]
    elif value not in ("", None) and value != default:
      parts.append(f"--{key}={value}")
  return " ".join(parts + ["--overwrite"])


def existing_differences(info, config):
  """How the records `info` describes differ from what `config` asks; [] when they match.

  Records are compared on what the request names: asking for no source in
  particular accepts records of the dataset from any source.
  """
  asked = request_of(config)
  kept = info.get("request")
  if kept is None:  # Records from before info.json kept the request.
    train = info["splits"].get("train", {})
    kept = {"validation_size": info.get("validation_size"), "seed": info.get("seed")}
    if "shards" in train:
      kept["num_shards"] = len(train["shards"])
  if asked["class_names"]:
    kept = dict(kept, class_names=info["class_names"])
  differences = []
  for key, value in asked.items():
    if key not in kept or (key in _SOURCE_FIELDS and not any(asked[k] for k in _SOURCE_FIELDS)):
      continue
    if key == "class_names" and not value:
      continue
    if kept[key] != value:
      differences.append(f"{key} {kept[key]!r} (asked {value!r})")
  return differences


def make_records(config):
  """Writes `<output_dir>/<dataset>/` for `config`; returns (folder, info).

  Records already there that match the request (existing_differences) are
  returned as they are, and nothing is written.
  """
  spec = get_spec(config.dataset, config.class_names)
  if config.transpose is not None:
    spec = dataclasses.replace(spec, transposed=config.transpose)
  if config.label_offset is not None:
    spec = dataclasses.replace(spec, label_offset=config.label_offset)
  if config.num_shards < 1:
    raise DataError(f"num_shards must be at least 1, got {config.num_shards}")
  final = records.dataset_dir(config.output_dir, spec.name)
  if os.path.exists(final) and not config.overwrite:
    try:
      info = records.read_info(config.output_dir, spec.name)
    except DataError as e:
      raise DataError(f"{final}: already exists but does not hold readable records ({e}); "
                      "set overwrite to replace it") from None
    differences = existing_differences(info, config)
    if differences:
      raise DataError(f"{final}: already exists with other settings: "
                      f"{'; '.join(differences)}; set overwrite to replace it")
    return final, info
  source = infer_source(config)
  raw = load_source(config, spec)
  check_entries = checks.run_checks(raw, spec)
  # Source positions survive the shuffles below, so the order is recoverable.
  indices = {name: np.arange(len(s)) for name, s in raw.items()}
  splits = {}
  if config.validation_size < 0:
    raise DataError(f"validation_size must be >= 0, got {config.validation_size}")
  if "train" in raw and raw["train"].labels is not None and config.validation_size > 0:
    keep, held = splits_lib.stratified_split(raw["train"].labels, config.validation_size, config.seed)
    if len(held):
      splits["train"], indices["train"], splits["validation"], indices["validation"] = (
          _take(raw["train"], keep), keep, _take(raw["train"], held), held)
    else:
      logging.warning("validation_size %s of %d images rounds to 0: no validation split",
                      config.validation_size, len(raw["train"]))
  # Train first whatever the source order (IDX names sort t10k before train), so
  # info.json lists splits and names duplicate pairs ("train/test") the same way.
  for name in sorted(raw, key=lambda n: n != "train"):
    splits.setdefault(name, raw[name])
  # Shuffle train and validation once so that every shard mixes all classes
  # (file-sharded workers then see balanced data); test keeps source order.
  rng = np.random.default_rng(config.seed)
  for name in ("train", "validation"):
    if name in splits:
      order = rng.permutation(len(splits[name]))
      splits[name], indices[name] = _take(splits[name], order), indices[name][order]

  num_train = len(splits["train"]) if "train" in splits else max(map(len, splits.values()))
  total = sum(map(len, splits.values()))
  info = {
      "schema_version": records.SCHEMA_VERSION,
      "dataset": spec.name,
      "class_names": list(spec.class_names),
      "num_classes": spec.num_classes,
      "digits": spec.digits,
      "image_shape": list(IMAGE_SHAPE),
      "source": source,
      "seed": config.seed,
      "validation_size": config.validation_size,
      "tool_version": tfmnist.__version__,
      "request": request_of(config),
      "rebuild": rebuild_command(config),
      "checks": check_entries,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "splits": {},
  }
  with files.atomic_folder(final, config.overwrite) as tmp:
    bar = Progress(total, "images", desc=f"writing {spec.name}", enabled=config.show_progress)
    for name, s in splits.items():
      # Train gets num_shards; other splits as many images per shard.
      num_shards = max(1, min(len(s), round(config.num_shards * len(s) / num_train)))
      summary = _split_summary(s, spec.num_classes)
      summary["shards"] = records.write_split(
          tmp, name, s.images, s.labels, indices[name], s.ids, num_shards, bar)
      info["splits"][name] = summary
    if "train" in splits:
      info["pixel_mean"], info["pixel_std"] = pixel_statistics(splits["train"].images)
    info["duplicates"] = duplicate_counts(splits)
    sources = sorted({f for s in raw.values() for f in s.files})
    info["source_files"] = [
        {"path": os.path.abspath(f), "sha256": files.sha256_file(f)} if os.path.exists(f)
        else {"path": f} for f in sources]
    for split in info["splits"].values():
      for shard in split["shards"]:
        shard["sha256"] = files.sha256_file(os.path.join(tmp, shard["file"]))
    with open(os.path.join(tmp, records.INFO_FILE), "w") as f:
      json.dump(info, f, indent=1)
  logging.info("Wrote %s: %s", final,
               ", ".join(f"{k} {v['count']}" for k, v in info["splits"].items()))
  return final, info


def ensure_records(records_dir, dataset, source_dir="", show_progress=True, say=logging.info):
  """info.json of a dataset, preparing its records first when they are missing.

  Every worker of a cluster may find the records missing and prepare them;
  the copies that land second read the one that landed first.

  Args:
    records_dir, dataset: where the records are, or go.
    source_dir: local files to prepare them from; empty: tensorflow-datasets
      or the official download.
    show_progress: show progress bars while preparing.
    say: where the one-line notes about preparing go.

  Raises:
    DataError: they are missing and cannot be prepared; the message gives the
      make_records command to run.
  """
  try:
    return records.read_info(records_dir, dataset)
  except DataError:
    pass
  say(f"Records of {dataset} not found in {records_dir}/; preparing them with make_records"
      f"{' from ' + source_dir if source_dir else ''}.")
  try:
    make_records(PrepareConfig(dataset=dataset, source_dir=source_dir, output_dir=records_dir,
                               show_progress=show_progress))
  except DataError as e:
    try:  # Another worker of the cluster may have prepared them meanwhile.
      info = records.read_info(records_dir, dataset)
    except DataError:
      # The reason alone: a download's advice names make_records settings.
      reason = getattr(e, "reason", str(e))
      hint = ("" if source_dir else "; without internet, set source_dir=DIR to prepare "
              f"them from local IDX or NPZ files of {dataset}")
      raise DataError(
          f"no records of {dataset} in {records_dir}/, and they could not be prepared "
          f"({reason}){hint}, or make them with "
          f"`python tools/make_records.py --dataset={dataset} --output_dir={records_dir}` "
          "(CSV and other sources)") from None
    say(f"Using the records of {dataset} that another process prepared.")
    return info
  return records.read_info(records_dir, dataset)
