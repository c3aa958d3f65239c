"""Tests of the benchmark's measurement helpers (tfmnist.bench)."""

import itertools
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import bench
from tfmnist import hardware, models
from tfmnist.models import convnets


def test_summarize_gives_median_range_and_relative_spread():
  summary = bench.summarize([10, 12, 8, 11, 9])
  assert summary["median"] == 10 and summary["min"] == 8 and summary["max"] == 12
  assert summary["spread"] == pytest.approx(0.4)
  assert summary["runs"] == [10.0, 12.0, 8.0, 11.0, 9.0]
  with pytest.raises(ValueError, match="no measurements"):
    bench.summarize([])


def _built(*layers):
  model = keras.Sequential([keras.Input((28, 28, 1)), *layers])
  model(np.zeros((1, 28, 28, 1), np.float32))
  return model


def test_forward_flops_counts_two_per_multiply_add_and_one_per_bias():
  dense = _built(keras.layers.Flatten(), keras.layers.Dense(10))
  assert bench.forward_flops(dense) == 2 * 784 * 10 + 10
  conv = _built(keras.layers.Conv2D(4, 3, use_bias=False))
  assert bench.forward_flops(conv) == 2 * 26 * 26 * 4 * 9


def test_seed_lenet_flops_match_its_layers():
  model = models.create("lenet", 10)
  model(np.zeros((1, 28, 28, 1), np.float32))
  multiply_adds = (26 * 26 * 32 * 9 + 24 * 24 * 64 * 32 * 9  # The two convolutions.
                   + 9216 * 128 + 128 * 10)                  # The two dense layers.
  forward = bench.forward_flops(model)
  # Biases and activations add under 1% to the multiply-adds.
  assert 2 * multiply_adds <= forward <= 2.01 * multiply_adds
  assert bench.training_flops(model) == 3 * forward


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_matmul_rate_counts_every_product_of_the_chain(monkeypatch, dtype):
  """2 * size**3 FLOP for each of `chain` products, over the time one call took."""
  ticks = itertools.count(0.0, 0.5)  # Every call of the clock is half a second later.
  monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
  rate = bench.matmul_flops_per_second(dtype, size=64, chain=3, repeats=2)
  assert rate == 3 * 2 * 64 ** 3 / 0.5


def test_arithmetic_seconds_times_the_products_of_each_layer():
  lenet5 = models.create("lenet5", 10)
  lenet5(np.zeros((1, 28, 28, 1), np.float32))
  seconds = bench.arithmetic_seconds(lenet5, batch_size=8)
  assert np.isfinite(seconds) and 0 < seconds < 1
  # A model without convolutions or dense layers has no products to time.
  flat = convnets.Sequence([keras.layers.Flatten()])
  flat(np.zeros((1, 28, 28, 1), np.float32))
  assert bench.arithmetic_seconds(flat, batch_size=8) == 0.0


def test_run_measurement_returns_seconds_and_the_last_json_line():
  seconds, result = bench.run_measurement(
      [sys.executable, "-c", "print('warming up'); print('{\"a\": 1}'); print('{\"a\": 2}')"])
  assert result == {"a": 2} and seconds > 0


@pytest.mark.parametrize("code,message", [
    ("import sys; sys.exit('disk on fire')", r"failed \(exit 1\): disk on fire"),
    ("print('no json here')", r"failed \(exit 0\): no JSON output"),
])
def test_run_measurement_names_the_command_and_its_last_error(code, message):
  with pytest.raises(bench.BenchmarkError, match=message) as raised:
    bench.run_measurement([sys.executable, "-c", code])
  assert "\n" not in str(raised.value) and sys.executable in str(raised.value)


def test_machine_names_the_cpu_its_bfloat16_and_the_auto_precision():
  facts = bench.machine()
  assert facts["cpu"] == hardware.cpu_model()
  assert facts["cpu_bf16"] == hardware.describe_cpu()["bf16"]
  assert facts["auto_precision"] == hardware.choose_precision(hardware.detect())[0]
  native = facts["cpu_bf16"] != "none"
  assert facts["cpu_label"].endswith(f"{'with' if native else 'without'} native bfloat16)")
  assert (facts["auto_precision"] == "mixed_bfloat16") == native
  assert facts["onednn"] == hardware.onednn_kernels()


def test_machine_names_each_gpu_and_the_labels_put_it_first(monkeypatch):
  h200 = hardware.Machine(cpu="Test CPU", gpus=(("NVIDIA H200", (9, 0)),))
  monkeypatch.setattr(hardware, "detect", lambda: h200)
  facts = bench.machine()
  assert facts["gpus"] == ["NVIDIA H200 (compute capability 9.0)"]
  assert facts["auto_precision"] == "mixed_bfloat16"
  assert bench.device_label(facts) == (
      f"GPU: NVIDIA H200 (compute capability 9.0); CPU: {facts['cpu_label']}")
  assert bench.device_label({"cpu_label": "a CPU", "gpus": []}) == "CPU: a CPU"


def test_markdown_writes_each_figure_as_median_and_range():
  summary = lambda *v: {"median": sorted(v)[len(v) // 2], "min": min(v), "max": max(v)}
  results = {"command": "python tools/benchmark.py", "repeats": 3, "steps": 10, "seeds": 3,
             "machine": {"cpu": "Test CPU", "cores": 2, "gpus": [], "tensorflow": "2.x",
                         "python": "3.x"},
             "records": {"idx": {"images": 70000, "source": "IDX",
                                 "command_seconds": summary(9.0, 10.0, 12.5),
                                 "make_records_seconds": summary(4.0, 4.5, 5.0)}}}
  text = bench.markdown(results)
  assert "Test CPU (2 cores, no GPU)" in text
  results["machine"].update(cpu_label="Test CPU (AVX2, without native bfloat16)",
                            auto_precision="float32", onednn="off")
  text = bench.markdown(results)
  assert "Test CPU (AVX2, without native bfloat16) (2 cores, no GPU)" in text
  assert "`--precision=auto` chooses float32 here. TensorFlow's oneDNN kernels: off." in text
  assert "| idx (IDX) | 70,000 | 10.0 (9.0-12.5) | 4.5 (4.0-5.0) |" in text
  assert "### Training throughput" not in text  # Only the sections that ran.


def test_markdown_says_whether_fit_compiled_its_step_with_xla():
  summary = lambda v: {"median": v, "min": v, "max": v}
  row = {"model": "lenet", "precision": "float32", "global_batch_size": 128,
         "custom": summary(1000.0), "fit": summary(800.0), "ratio": summary(1.25)}
  results = {"command": "python tools/benchmark.py", "repeats": 1, "steps": 10,
             "machine": {"cpu": "Test CPU", "cores": 2, "gpus": [], "tensorflow": "2.x",
                         "python": "3.x"}, "fit": [dict(row)]}
  text = bench.markdown(results)  # Results of before the choice was recorded.
  assert "| lenet | float32 | 128 | 1,000 (1,000-1,000) | 800 (800-800) |" in text
  assert "XLA" not in text
  results["fit"] = [{**row, "fit_xla": False}]
  assert "Neither side compiled its step with XLA." in bench.markdown(results)
  results["fit"] = [{**row, "fit_xla": True}, {**row, "precision": "mixed_bfloat16",
                                               "fit_xla": False}]
  assert ("Keras fit compiled its step with XLA for lenet in float32; the loop never does."
          in bench.markdown(results))


@pytest.mark.parametrize("text,message", [
    ("missing.flags@99", "no flagfile missing.flags"),
    ("{flagfile}@fast", "is not flagfile@target_percent"),
])
def test_bad_recipes_are_named(tmp_path, text, message):
  flagfile = tmp_path / "x.flags"
  flagfile.write_text("--epochs=1\n")
  with pytest.raises(ValueError, match=message):
    bench.parse_recipe(text.format(flagfile=flagfile))
