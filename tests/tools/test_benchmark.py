"""Tests of tools/benchmark.py on the tiny synthetic records."""

import json

import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist import hardware
from tfmnist.data import pipeline
from tfmnist.serving import inference

TOOL = str(tfx.REPO_ROOT / "tools" / "benchmark.py")
pytestmark = pytest.mark.slow  # Every test here runs the benchmark.
# What --precision=auto trains in here, and the precisions the benchmark measures
# for --precisions=float32,auto,float32 (each once).
AUTO = hardware.choose_precision(hardware.detect())[0]
MEASURED = ["float32"] + ([AUTO] if AUTO != "float32" else [])


def _benchmark(*args):
  return tfx.run([tfx.PYTHON, TOOL, *map(str, args)], timeout=600)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
  """One small benchmark of every section, on 700 IDX images and a 50-row CSV for `records`."""
  root = tmp_path_factory.mktemp("benchmark")
  records_dir = tfx.shared_records(tmp_path_factory)
  flagfile = root / "tiny.flags"
  flagfile.write_text("# A 1-epoch mlp.\n--dataset=mnist\n--model=mlp\n--epochs=1\n"
                      "--global_batch_size=32\n--eval_batch_size=60\n")
  output_dir = root / "out"
  result = _benchmark(
      f"--records_dir={records_dir}", f"--output_dir={output_dir}", "--sections=fit",
      "--sections=utilisation", "--sections=pipeline", "--sections=records",
      "--sections=accuracy", f"--idx_dir={tfx.write_idx_dir(root / 'idx')}", "--csv_rows=50",
      "--fit_models=mlp", "--precisions=float32,auto,float32", "--repeats=1", "--steps=2",
      "--warmup_steps=2", "--matmul_size=256",
      f"--recipes={flagfile}@5", "--seeds=1", f"--runs_dir={root / 'runs'}")
  tfx.check(result)
  with open(output_dir / "results.json") as f:
    results = json.load(f)
  return results, (output_dir / "results.md").read_text(), result.stdout, records_dir, root


def test_fit_pairs_the_loop_with_keras_fit(measured):
  results, markdown, *_ = measured
  # float32, then auto's choice here unless that is float32 too: each once.
  assert [r["precision"] for r in results["fit"]] == MEASURED
  row = results["fit"][0]
  assert row["model"] == "mlp" and row["precision"] == "float32"
  assert len(row["custom"]["runs"]) == len(row["fit"]["runs"]) == 1
  ratios = [c / f for c, f in zip(row["custom"]["runs"], row["fit"]["runs"])]
  assert row["ratio"]["runs"] == pytest.approx(ratios)
  assert "| mlp | float32 | 128 |" in markdown
  # --fit_xla=off by default: both sides run the same kernels, without XLA.
  assert all(r["fit_xla"] is False for r in results["fit"])
  assert "Neither side compiled its step with XLA." in markdown


@pytest.mark.parametrize("choice", ["on", "auto"])
def test_fit_reports_whether_keras_compiled_its_step_with_xla(measured, choice):
  records_dir = measured[3]
  result = tfx.check(tfx.run([
      tfx.PYTHON, str(tfx.REPO_ROOT / "tools" / "benchmark_fit.py"), "--mode=fit",
      "--model=mlp", f"--records_dir={records_dir}", "--steps=2", "--warmup_steps=2",
      f"--fit_xla={choice}"], timeout=600))
  reported = json.loads(result.stdout.strip().splitlines()[-1])
  # Keras's default turns XLA on only where TensorFlow sees a GPU (none in CI).
  expected = choice == "on" or bool(tf.config.list_physical_devices("GPU"))
  assert reported["xla"] is expected and reported["images_per_second"] > 0


def test_utilisation_counts_the_seed_lenets_flops(measured):
  results, markdown, *_ = measured
  assert [r["precision"] for r in results["utilisation"]] == MEASURED
  # The seed LeNet's multiply-adds, counted by hand: conv 3x3x1x32 on 26x26, conv
  # 3x3x32x64 on 24x24, dense 9216x128 and 128x10. Training is three forwards.
  multiply_adds = 26 * 26 * 9 * 32 + 24 * 24 * 9 * 32 * 64 + 9216 * 128 + 128 * 10
  for row in results["utilisation"]:
    assert row["model"] == "lenet" and row["global_batch_size"] == 256
    assert 3 * 2 * multiply_adds <= row["training_flops_per_image"] <= 3 * 2.01 * multiply_adds
    assert len(row["utilisation"]["runs"]) == len(row["matmul_flops_per_second"]["runs"]) == 1
  float32, *others = results["utilisation"]
  assert len(float32["products_alone_utilisation"]["runs"]) == 1
  assert all(r["products_alone_utilisation"] is None for r in others)  # float32 only.
  assert "### Hardware utilisation" in markdown and "| products alone |" in markdown


def test_pipeline_reports_read_batch_and_augment_rates_of_each_run(measured):
  results, markdown, *_ = measured
  for name in ("read", "batch", "augment"):
    assert len(results["pipeline"][name]["runs"]) == results["repeats"] == 1
  assert "### Input pipeline, images/s" in markdown


def test_records_times_the_command_and_the_call(measured):
  results, markdown, *_ = measured
  assert results["records"]["idx"]["images"] == tfx.NUM_TRAIN + tfx.NUM_TEST
  assert results["records"]["csv"]["images"] == 50
  for case in results["records"].values():
    command, call = case["command_seconds"], case["make_records_seconds"]
    assert len(command["runs"]) == len(call["runs"]) == 1
    assert command["median"] > call["median"] > 0  # The command adds start-up.
  assert "### make_records, seconds" in markdown


def test_accuracy_trains_each_seed_and_scores_it_once_on_test(measured):
  results, markdown, stdout, records_dir, root = measured
  # The float32 twin only where auto chooses another precision.
  shipped, *twin = results["accuracy"]
  assert shipped["extra_flags"] == []
  assert [row["extra_flags"] for row in twin] == (
      [] if AUTO == "float32" else [["--precision=float32"]])
  for row in (shipped, *twin):
    assert [r["seed"] for r in row["runs"]] == [0]
    assert row["target"] == pytest.approx(0.05)
    for r in row["runs"]:
      assert 0 < r["train_seconds"] < r["command_seconds"]
      assert r["test_accuracy"] == pytest.approx(1 - r["test_errors"] / tfx.NUM_TEST)
      assert r["epochs"] == 1
    assert row["reached"] == sum(r["test_accuracy"] >= 0.05 for r in row["runs"])
  # With TTA: the same export averaged over the shifted views (never mirrored: digits).
  _, images, labels = pipeline.read_labelled(str(records_dir), "mnist", "test")
  tta = inference.load(str(root / "runs" / "tiny-seed0")).predict(images, tta=True)
  assert shipped["runs"][0]["test_accuracy_tta"] == pytest.approx(
      np.mean(tta.argmax(-1) == labels))
  assert "### Time to accuracy" in markdown
  assert ("tiny.flags --precision=float32" in markdown) == bool(twin)
  assert "| with TTA |" in markdown
  assert f"{shipped['test_accuracy_tta']['median']:.2%}" in markdown
  assert markdown in stdout  # The same tables are printed.


def test_results_name_the_machine_and_the_command(measured):
  results, markdown, *_ = measured
  assert results["machine"]["cores"] >= 1
  assert results["command"].startswith("python tools/benchmark.py --records_dir=")
  assert results["machine"]["cpu"] in markdown


def test_missing_records_stop_before_measuring_and_write_nothing(tmp_path):
  output_dir = tmp_path / "out"
  result = _benchmark(f"--records_dir={tmp_path / 'none'}", f"--output_dir={output_dir}",
                      "--sections=pipeline")
  assert result.returncode != 0
  errors = tfx.clean_stderr(result.stderr).strip().splitlines()
  assert len(errors) == 1 and "none" in errors[0], tfx.describe(result)
  assert not output_dir.exists()


_TIMER_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import keras, numpy as np
import benchmark_fit

class Slow(keras.callbacks.Callback):
  def on_train_batch_begin(self, batch, logs=None):
    time.sleep(0.05)
  def on_train_end(self, logs=None):
    time.sleep(1.0)  # What fit sometimes spends before it returns.

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
model.compile(optimizer="sgd", loss="mse")
timer = benchmark_fit._Timer(warmup_steps=2, last_step=6)
start = time.perf_counter()
model.fit(np.zeros((6, 4)), np.zeros((6, 2)), batch_size=1, epochs=1, verbose=0,
          callbacks=[Slow(), timer])
print(timer.stop - timer.start, time.perf_counter() - start)
"""


def test_fit_timer_counts_the_timed_steps_and_not_fits_return():
  result = tfx.check(tfx.run([tfx.PYTHON, "-c", _TIMER_SCRIPT, str(tfx.REPO_ROOT / "tools")]))
  timed, whole = map(float, result.stdout.split())
  # Steps 3-6 each sleep 0.05 s; the 1 s after the last step is fit's, not theirs.
  assert 0.2 <= timed < 0.7
  assert whole > 1.2
