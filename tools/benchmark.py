#!/usr/bin/env python3
r"""tfmnist's figures, measured on this machine, as Markdown and JSON.

Sections (--sections; all by default):
  fit          images/s of tfmnist's loop against Keras `model.fit` on the
               identical model (the seed LeNet and the Kaggle CNN), in float32
               and in the precision `--precision=auto` chooses on this machine
               (mixed bfloat16 where the CPU has AVX-512 BF16 or AMX), run
               alternately in interleaved pairs; both without XLA unless
               --fit_xla=auto gives fit Keras's default.
  utilisation  the seed LeNet's training FLOP/s at batch 256 over the matrix-
               multiply rate of the same precision measured in the same run,
               for the same precisions.
  pipeline     images/s read and parsed from records, and batched with and
               without the affine augmentation.
  records      seconds of make_records for 70,000 IDX images and a 42,000-row CSV.
  accuracy     time to accuracy: each recipe (flagfile@target%) trained once
               per seed, its final model scored once on the official test set;
               the first recipe also in float32 where auto chooses another
               precision, for that precision's speed and accuracy cost.

Every measurement is a separate process, so the pairs share nothing but the
machine. Each figure is the median of --repeats runs (--seeds for accuracy)
with min, max and spread. results.json is rewritten after each section, so a
stopped benchmark keeps what it measured.

Example (about an hour on a 2-core CPU):
  python tools/benchmark.py --records_dir=records --output_dir=benchmarks
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

import bench  # pylint: disable=g-import-not-at-top
from tfmnist import files, hardware, run_dir  # pylint: disable=g-import-not-at-top
from tfmnist.data import records  # pylint: disable=g-import-not-at-top
from tfmnist.errors import DataError  # pylint: disable=g-import-not-at-top
from tfmnist.progress import Progress  # pylint: disable=g-import-not-at-top

SECTIONS = ("fit", "utilisation", "pipeline", "records", "accuracy")

_RECORDS_DIR = flags.DEFINE_string("records_dir", "records", "Folder of prepared records.")
_DATASET = flags.DEFINE_string("dataset", "mnist", "Dataset of the throughput sections.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmarks",
                                  "Where results.md and results.json go.")
_SECTIONS = flags.DEFINE_multi_enum("sections", list(SECTIONS), SECTIONS, "What to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Runs per throughput figure.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 100, "Timed train steps per throughput run.",
                              lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup_steps", 20,
                               "Untimed train steps first (tracing) per throughput run.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "Side of the matmul rate's matrices.")
_FIT_MODELS = flags.DEFINE_list("fit_models", ["lenet", "kaggle_cnn"],
                                "Models of the loop-vs-fit section.")
_FIT_XLA = flags.DEFINE_enum(
    "fit_xla", "off", ("off", "on", "auto"),
    "Keras fit's jit_compile in the loop-vs-fit section: off compiles its step as the loop's, "
    "without XLA; auto is Keras's default (XLA wherever there is a GPU).")
_PRECISIONS = flags.DEFINE_list(
    "precisions", ["float32", "auto"], "Precisions of the loop-vs-fit and utilisation "
    "sections; auto: the one training chooses on this machine (a repeat is dropped).")
_RECIPES = flags.DEFINE_list(
    "recipes", ["fast.flags@99.0", "fast995.flags@99.5"],
    "Time-to-accuracy recipes as flagfile@target_percent.")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Training runs per recipe (seeds 0..N-1).",
                              lower_bound=1)
_FLOAT32_TWIN = flags.DEFINE_bool(
    "float32_twin", True, "Also train the first recipe in float32 with each seed, where "
    "--precision=auto chooses another precision on this machine.")
_IDX_DIR = flags.DEFINE_string(
    "idx_dir", "/usr/share/datasets/fashion-mnist",
    "70,000 IDX images for the records section; synthetic ones when absent.")
_CSV_ROWS = flags.DEFINE_integer("csv_rows", 42_000, "Rows of the records section's CSV.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", "", "Keep the accuracy section's run folders "
                                 "here (<flagfile>-<precision>-seed<N>); empty: a temporary "
                                 "folder, deleted at the end.")
_MEASURE = flags.DEFINE_enum("measure", None, ("matmul", "arithmetic", "test_accuracy"),
                             "Internal: make one measurement in this process, print JSON.")
_PRECISION = flags.DEFINE_string("precision", "float32", "Internal: matmul dtype.")
_MODEL_DIR = flags.DEFINE_string("model_dir", "", "Internal: run folder to score on test.")

_TOOLS = os.path.dirname(os.path.abspath(__file__))
_UTILISATION_MODEL, _UTILISATION_BATCH = "lenet", 256


def _python(*args):
  return [sys.executable, *args]


def measured_precisions(names, auto_policy):
  """The dtype policies to measure: `names` with auto resolved, each once, in order."""
  policies = []
  for name in names:
    policy = auto_policy if name == "auto" else name
    if policy not in policies:
      policies.append(policy)
  return policies


def _precisions():
  return measured_precisions(_PRECISIONS.value, hardware.choose_precision(hardware.detect())[0])


def _progress(total, desc):
  return Progress(total, "runs", desc=desc)


# ----------------------------------------------------------------------------
# One measurement per process
# ----------------------------------------------------------------------------


def measure_matmul(precision, size):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dtype = tf.bfloat16 if "bfloat16" in precision else tf.float32
  return {"precision": precision, "size": size,
          "flops_per_second": bench.matmul_flops_per_second(dtype, size)}


def _built_model(name):
  """The registered model `name` with 10 classes, built by a call on one image."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfmnist import models  # pylint: disable=g-import-not-at-top
  model = models.create(name, 10)
  model(np.zeros((1, 28, 28, 1), np.float32))
  return model


def measure_arithmetic(model_name, batch_size):
  """The float32 products of `model_name` timed alone: a ceiling on images/s."""
  seconds = bench.arithmetic_seconds(_built_model(model_name), batch_size)
  return {"model": model_name, "global_batch_size": batch_size, "seconds": seconds,
          "images_per_second": batch_size / seconds}


def measure_test_accuracy(model_dir, records_dir):
  """The exported model of `model_dir` on the official test split, once.

  Scored plain and with test-time augmentation (one-pixel shifts, and their
  mirror images when the dataset is not digits), from one load of the model.
  """
  from tfmnist.data import pipeline  # pylint: disable=g-import-not-at-top
  from tfmnist.serving import inference  # pylint: disable=g-import-not-at-top
  dataset = inference.run_settings(model_dir).dataset
  info, images, labels = pipeline.read_labelled(records_dir, dataset, "test")
  model = inference.load(model_dir)
  result = {"dataset": dataset, "images": len(labels)}
  for prefix, tta in (("", False), ("tta_", True)):
    predicted = model.predict(images, tta=tta, mirror=not info["digits"])
    errors = int((predicted.argmax(axis=1) != labels).sum())
    result.update({f"{prefix}errors": errors, f"{prefix}accuracy": 1.0 - errors / len(labels)})
  return result


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------


def _fit_command(mode, model, precision, batch):
  return _python(os.path.join(_TOOLS, "benchmark_fit.py"), f"--mode={mode}", f"--model={model}",
                 f"--precision={precision}", f"--global_batch_size={batch}",
                 f"--steps={_STEPS.value}", f"--warmup_steps={_WARMUP.value}",
                 f"--records_dir={_RECORDS_DIR.value}",
                 f"--dataset={_DATASET.value}", f"--fit_xla={_FIT_XLA.value}")


def _images_per_second(command):
  return bench.run_measurement(command)[1]["images_per_second"]


def section_fit():
  """Loop vs fit in pairs; the order inside a pair alternates between repeats."""
  cases = [(m, p) for m in _FIT_MODELS.value for p in _precisions()]
  bar = _progress(len(cases) * _REPEATS.value * 2, "fit")
  rows = []
  for model, precision in cases:
    runs, xla = {"custom": [], "fit": []}, set()
    for repeat in range(_REPEATS.value):
      for mode in ("custom", "fit") if repeat % 2 == 0 else ("fit", "custom"):
        _, result = bench.run_measurement(_fit_command(mode, model, precision, 128))
        runs[mode].append(result["images_per_second"])
        if mode == "fit":
          xla.add(result["xla"])
        bar.update(1, **{mode: int(runs[mode][-1])})
    ratios = [c / f for c, f in zip(runs["custom"], runs["fit"])]
    rows.append({"model": model, "precision": precision, "global_batch_size": 128,
                 "custom": bench.summarize(runs["custom"]), "fit": bench.summarize(runs["fit"]),
                 "ratio": bench.summarize(ratios), "fit_xla": xla == {True}})
  return rows


def section_utilisation():
  """Training FLOP/s of the loop over the matmul rate, both measured each repeat."""
  flops_per_image = bench.training_flops(_built_model(_UTILISATION_MODEL))
  precisions = _precisions()
  bar = _progress(_REPEATS.value * 2 * len(precisions), "utilisation")
  rows = []
  for precision in precisions:
    matmul, images, utilisation, ceiling = [], [], [], []
    for _ in range(_REPEATS.value):
      _, result = bench.run_measurement(_python(__file__, "--measure=matmul",
                                                f"--precision={precision}",
                                                f"--matmul_size={_MATMUL_SIZE.value}"))
      matmul.append(result["flops_per_second"])
      images.append(_images_per_second(
          _fit_command("custom", _UTILISATION_MODEL, precision, _UTILISATION_BATCH)))
      utilisation.append(images[-1] * flops_per_image / matmul[-1])
      if precision == "float32":  # The products alone: what the kernels allow.
        _, result = bench.run_measurement(_python(__file__, "--measure=arithmetic"))
        ceiling.append(result["images_per_second"] * flops_per_image / matmul[-1])
      bar.update(2, util=f"{utilisation[-1]:.0%}")
    rows.append({"model": _UTILISATION_MODEL, "precision": precision,
                 "global_batch_size": _UTILISATION_BATCH,
                 "training_flops_per_image": flops_per_image,
                 "matmul_flops_per_second": bench.summarize(matmul),
                 "images_per_second": bench.summarize(images),
                 "model_flops_per_second": bench.summarize(
                     [i * flops_per_image for i in images]),
                 "utilisation": bench.summarize(utilisation),
                 "products_alone_utilisation": bench.summarize(ceiling) if ceiling else None})
  return rows


def section_pipeline():
  bar = _progress(_REPEATS.value * 2, "pipeline")
  runs = {"read": [], "batch": [], "augment": []}
  for _ in range(_REPEATS.value):
    for mode in ("read", "augment"):
      _, result = bench.run_measurement(_python(
          os.path.join(_TOOLS, "benchmark_pipeline.py"), f"--mode={mode}", "--repeats=1",
          f"--records_dir={_RECORDS_DIR.value}", f"--dataset={_DATASET.value}"))
      if mode == "read":
        runs["read"].append(result["read_images_per_second"])
      runs["batch" if mode == "read" else "augment"].append(result["epoch_images_per_second"])
      bar.update(1)
  return {name: bench.summarize(values) for name, values in runs.items()}


def section_records():
  with tempfile.TemporaryDirectory(prefix="tfmnist-bench-") as tmp:
    path = os.path.join(tmp, "records.json")
    bench.run_measurement(_python(os.path.join(_TOOLS, "benchmark_records.py"),
                                  f"--repeats={_REPEATS.value}", f"--json={path}",
                                  f"--idx_dir={_IDX_DIR.value}", f"--csv_rows={_CSV_ROWS.value}"),
                           prints_json=False)
    with open(path) as f:
      cases = json.load(f)["cases"]
  return {name: {"images": case["images"], "source": case["source"],
                 "command_seconds": bench.summarize(case["command_seconds"]["runs"]),
                 "make_records_seconds": bench.summarize(case["make_records_seconds"]["runs"])}
          for name, case in cases.items()}


def train_and_score(flagfile, seed, extra, runs_dir):
  """One training run and its single test evaluation."""
  name = os.path.splitext(os.path.basename(flagfile))[0]
  model_dir = os.path.join(runs_dir, f"{name}{'-float32' if extra else ''}-seed{seed}")
  if os.path.exists(model_dir):
    raise bench.BenchmarkError(f"{model_dir} exists; a benchmark run starts from scratch")
  command_seconds, _ = bench.run_measurement(_python(
      "-m", "tfmnist.train", f"--flagfile={flagfile}", f"--records_dir={_RECORDS_DIR.value}",
      f"--model_dir={model_dir}", f"--seed={seed}", "--noprogress", *extra), prints_json=False)
  metrics = run_dir.RunDir(model_dir).read_metrics()
  if "train_seconds" not in metrics:
    raise bench.BenchmarkError(f"{model_dir}: training left no metrics.json")
  _, scored = bench.run_measurement(_python(__file__, "--measure=test_accuracy",
                                            f"--model_dir={model_dir}",
                                            f"--records_dir={_RECORDS_DIR.value}"))
  return {"seed": seed, "command_seconds": command_seconds,
          "train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"],
          "val_accuracy": metrics["val_accuracy"], "test_accuracy": scored["accuracy"],
          "test_errors": scored["errors"], "test_accuracy_tta": scored["tta_accuracy"]}


def section_accuracy():
  recipes = [(*bench.parse_recipe(text), ()) for text in _RECIPES.value]
  auto_policy = hardware.choose_precision(hardware.detect())[0]
  if _FLOAT32_TWIN.value and recipes and auto_policy != "float32":
    recipes.insert(1, (recipes[0][0], recipes[0][1], ("--precision=float32",)))
  bar = _progress(len(recipes) * _SEEDS.value, "accuracy")
  runs = {index: [] for index in range(len(recipes))}
  with tempfile.TemporaryDirectory(prefix="tfmnist-bench-") as tmp:
    for seed in range(_SEEDS.value):  # Seed-major: recipes interleave.
      for index, (flagfile, _, extra) in enumerate(recipes):
        runs[index].append(train_and_score(flagfile, seed, extra, _RUNS_DIR.value or tmp))
        bar.update(1, acc=f"{runs[index][-1]['test_accuracy']:.2%}")
  rows = []
  for index, (flagfile, target, extra) in enumerate(recipes):
    done = runs[index]
    rows.append({"flagfile": flagfile, "extra_flags": list(extra), "target": target,
                 "runs": done,
                 "reached": sum(target is None or r["test_accuracy"] >= target for r in done),
                 **{key: bench.summarize([r[key] for r in done])
                    for key in ("test_accuracy", "test_accuracy_tta", "train_seconds",
                                "command_seconds", "val_accuracy")}})
  return rows


# ----------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  if _MEASURE.value:
    if _MEASURE.value == "matmul":
      result = measure_matmul(_PRECISION.value, _MATMUL_SIZE.value)
    elif _MEASURE.value == "arithmetic":
      result = measure_arithmetic(_UTILISATION_MODEL, _UTILISATION_BATCH)
    else:
      result = measure_test_accuracy(_MODEL_DIR.value, _RECORDS_DIR.value)
    print(json.dumps(result))
    return
  try:
    records.read_info(_RECORDS_DIR.value, _DATASET.value)  # Fails early, in one line.
  except DataError as e:
    sys.exit(f"benchmark.py: error: {e}")
  for text in _RECIPES.value if "accuracy" in _SECTIONS.value else ():
    try:
      bench.parse_recipe(text)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  results = {"command": " ".join(["python", "tools/benchmark.py", *sys.argv[1:]]),
             "machine": bench.machine(), "repeats": _REPEATS.value, "steps": _STEPS.value,
             "seeds": _SEEDS.value}
  sections = {"fit": section_fit, "utilisation": section_utilisation,
              "pipeline": section_pipeline, "records": section_records,
              "accuracy": section_accuracy}
  for name in SECTIONS:
    if name not in _SECTIONS.value:
      continue
    try:
      results[name] = sections[name]()
    except bench.BenchmarkError as e:
      sys.exit(f"benchmark.py: section {name}: {e}")
    files.write_text_atomically(os.path.join(_OUTPUT_DIR.value, "results.json"),
                                  json.dumps(results, indent=1))
    files.write_text_atomically(os.path.join(_OUTPUT_DIR.value, "results.md"),
                                  bench.markdown(results))
  print(bench.markdown(results))
  print(f"wrote {os.path.join(_OUTPUT_DIR.value, 'results.md')} and results.json")


if __name__ == "__main__":
  app.run(main)
