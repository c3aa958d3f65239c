"""Measurement helpers for tools/benchmark.py.

Every measurement runs in a process of its own that prints one line of JSON,
so runs of different kinds can be interleaved and none inherits another's
warm caches, threads or traced graphs. This module holds what the benchmark
needs besides those processes: spreads, FLOP counts, the matmul rate and the
speed of a model's own convolution and matmul kernels.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import tfmnist  # pylint: disable=unused-import  # first: it sets TensorFlow's CPU kernels
import keras
import tensorflow as tf

from tfmnist import hardware


class BenchmarkError(RuntimeError):
  """A measurement process failed; the message is one line naming it."""


def summarize(values):
  """Median, min, max and relative spread of repeated measurements.

  The spread is (max - min) / median: 0.05 means the runs lay within 5% of
  the median's size. A figure is only reported with its spread.
  """
  values = [float(v) for v in values]
  if not values:
    raise ValueError("no measurements to summarize")
  median = statistics.median(values)
  return {"median": median, "min": min(values), "max": max(values),
          "spread": (max(values) - min(values)) / median if median else 0.0,
          "runs": values}


def forward_flops(model, image_shape=(28, 28, 1)):
  """Floating-point operations of one image's forward pass (inference mode).

  Counted by TensorFlow's graph profiler from the registered statistics of
  each op in the traced graph (Conv2D and MatMul: 2 per multiply-add; bias
  adds and other element-wise ops: 1 per element). The model must be built.
  """
  traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(
      tf.TensorSpec((1, *image_shape), tf.float32))
  builder = tf.compat.v1.profiler.ProfileOptionBuilder
  options = builder(builder.float_operation()).with_empty_output().build()
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel("ERROR")  # The v1 profiler warns that it is v1 on every call.
  try:
    profile = tf.compat.v1.profiler.profile(graph=traced.graph, cmd="op", options=options)
  finally:
    logger.setLevel(level)
  return int(profile.total_float_ops)


def training_flops(model, image_shape=(28, 28, 1)):
  """FLOPs of one image's training step: the forward pass and a backward pass
  that costs two forwards (gradients for the inputs and for the weights)."""
  return 3 * forward_flops(model, image_shape)


def _seconds_per_call(fn, calls=10, repeats=3):
  """The best average seconds of `calls` calls of a traced `fn` (traced first)."""
  fn().numpy()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      result = fn()
    result.numpy()
    best = min(best, (time.perf_counter() - start) / calls)
  return best


def arithmetic_seconds(model, batch_size, image_shape=(28, 28, 1)):
  """Seconds per float32 training step of a sequential model's products alone.

  Every Conv2D and Dense layer's forward product, weight gradient and (after
  the first layer) input gradient is timed on its own, at the layer's shapes
  in this batch. The sum is the step time if nothing else cost anything (no
  element-wise work, optimizer or loop), so batch_size / sum is a ceiling on
  images/s that the kernels themselves set.

  Args:
    model: a built model with its layers in order in `model.stack`
      (tfmnist.models.convnets.Sequence).
    batch_size: images per step.
    image_shape: one image's shape.
  """
  x = tf.random.stateless_uniform((batch_size, *image_shape), (0, 3))
  total, first = 0.0, True
  for layer in model.stack:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      kernel = tf.convert_to_tensor(layer.kernel)
      if isinstance(layer, keras.layers.Conv2D):
        strides, padding = (1, *layer.strides, 1), layer.padding.upper()
        y = tf.nn.conv2d(x, kernel, strides, padding)
        ops = [lambda x=x, k=kernel, s=strides, p=padding: tf.nn.conv2d(x, k, s, p),
               lambda x=x, k=kernel, y=y, s=strides, p=padding: tf.raw_ops.Conv2DBackpropFilter(
                   input=x, filter_sizes=k.shape, out_backprop=y, strides=s, padding=p)]
        if not first:
          ops.append(lambda x=x, k=kernel, y=y, s=strides, p=padding:
                     tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=k,
                                                    out_backprop=y, strides=s, padding=p))
      else:
        y = tf.matmul(x, kernel)
        ops = [lambda x=x, k=kernel: tf.matmul(x, k),
               lambda x=x, y=y: tf.matmul(x, y, transpose_a=True)]
        if not first:
          ops.append(lambda y=y, k=kernel: tf.matmul(y, k, transpose_b=True))
      total += sum(_seconds_per_call(tf.function(op)) for op in ops)
      first = False
    x = layer(x)  # Shapes for the next layer; dropout and BN in inference mode.
  return total


def matmul_flops_per_second(dtype=tf.float32, size=2048, chain=16, repeats=5):
  """The best rate of square `size` matrix multiplies, in FLOP/s.

  `chain` products run inside one traced loop, each feeding the next, so no
  call overhead or dead-code elimination hides in the figure. The first call
  traces and is not timed. Each product is 2 * size**3 operations.
  """
  scale = 1.0 / size ** 0.5  # Keeps the chained products' values bounded.
  a = tf.cast(tf.random.stateless_normal((size, size), (0, 1)) * scale, dtype)
  b = tf.cast(tf.random.stateless_normal((size, size), (0, 2)) * scale, dtype)

  @tf.function
  def products(x, y):
    """Cross-replica (no strategy): `chain` dependent matmuls."""
    for _ in tf.range(chain):
      x = tf.matmul(x, y)
    return tf.reduce_sum(tf.cast(x[:1, :1], tf.float32))

  products(a, b).numpy()
  best = 0.0
  for _ in range(repeats):
    start = time.perf_counter()
    products(a, b).numpy()
    best = max(best, chain * 2 * size ** 3 / (time.perf_counter() - start))
  return best


def run_measurement(command, env=None, prints_json=True):
  """Runs one measurement process; returns (wall seconds, its last JSON line).

  A command that reports through a file (`prints_json=False`) returns None
  for the line.

  Raises:
    BenchmarkError: the process failed or printed no JSON; the message carries the
      command and the last line of its error output.
  """
  start = time.perf_counter()
  result = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
  seconds = time.perf_counter() - start
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  if result.returncode or (prints_json and not lines):
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    if not result.returncode:
      errors = ["no JSON output"]
    raise BenchmarkError(f"{' '.join(command)} failed (exit {result.returncode}): "
                         f"{errors[-1] if errors else 'no error output'}")
  return seconds, json.loads(lines[-1]) if prints_json else None


def parse_recipe(text):
  """'fast.flags@99.0' -> ('fast.flags', 0.99); no '@target' gives None.

  Raises:
    ValueError: the flagfile does not exist or the target is not a number.
  """
  flagfile, _, target = text.partition("@")
  if not os.path.exists(flagfile):
    raise ValueError(f"--recipes: no flagfile {flagfile}")
  try:
    return flagfile, float(target) / 100 if target else None
  except ValueError:
    raise ValueError(f"--recipes: {text!r} is not flagfile@target_percent") from None


def _spread(summary, fmt="{:,.0f}"):
  return (f"{fmt.format(summary['median'])} ({fmt.format(summary['min'])}-"
          f"{fmt.format(summary['max'])})")


def markdown(results):
  """The results as Markdown tables: median (min-max) of every figure."""
  m = results["machine"]
  cpu = m.get("cpu_label", m["cpu"])
  auto = (f" `--precision=auto` chooses {m['auto_precision']} here."
          if "auto_precision" in m else "")
  if "onednn" in m:
    auto += f" TensorFlow's oneDNN kernels: {m['onednn']}."
  lines = [f"Measured with `{results['command']}` on {cpu} ({m['cores']} cores"
           f"{', GPUs: ' + ', '.join(m['gpus']) if m['gpus'] else ', no GPU'}), "
           f"TensorFlow {m['tensorflow']}, Python {m['python']}.{auto} Each cell is the "
           "median (min-max) of the runs.", ""]
  if "fit" in results:
    lines += [f"### Training throughput, images/s ({results['repeats']} interleaved pairs, "
              f"{results['steps']} steps each)", "",
              "| model | precision | batch | tfmnist loop | Keras fit | loop / fit |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['precision']} | {r['global_batch_size']} | "
              f"{_spread(r['custom'])} | {_spread(r['fit'])} | "
              f"{_spread(r['ratio'], '{:.2f}')} |" for r in results["fit"]]
    if any("fit_xla" in r for r in results["fit"]):
      xla = [f"{r['model']} in {r['precision']}" for r in results["fit"] if r["fit_xla"]]
      lines += ["", (f"Keras fit compiled its step with XLA for {', '.join(xla)}; the loop "
                     "never does." if xla else "Neither side compiled its step with XLA.")]
    lines.append("")
  if "utilisation" in results:
    lines += ["### Hardware utilisation (seed LeNet, tfmnist loop)", "",
              "| precision | batch | training GFLOP/image | images/s | model GFLOP/s "
              "| matmul GFLOP/s | utilisation | products alone |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["utilisation"]:
      alone = r["products_alone_utilisation"]
      giga = {k: {**r[k], **{s: r[k][s] / 1e9 for s in ("median", "min", "max")}}
              for k in ("model_flops_per_second", "matmul_flops_per_second")}
      lines.append(f"| {r['precision']} | {r['global_batch_size']} | "
                   f"{r['training_flops_per_image'] / 1e9:.4f} | {_spread(r['images_per_second'])} "
                   f"| {_spread(giga['model_flops_per_second'])} | "
                   f"{_spread(giga['matmul_flops_per_second'])} | "
                   f"{_spread(r['utilisation'], '{:.0%}')} | "
                   f"{_spread(alone, '{:.0%}') if alone else '-'} |")
    lines += ["", "Utilisation is the model's training FLOP/s (3x the forward FLOPs that "
              "TensorFlow's profiler counts) over the matmul rate of the same precision. "
              "Products alone: the same for the convolutions' and matmuls' float32 kernels "
              "timed one by one at the layers' shapes, with nothing else running: the ceiling "
              "the kernels set.", ""]
  if "pipeline" in results:
    p = results["pipeline"]
    lines += ["### Input pipeline, images/s", "", "| read + parse | batch | batch + augment |",
              "| ---: | ---: | ---: |",
              f"| {_spread(p['read'])} | {_spread(p['batch'])} | {_spread(p['augment'])} |", ""]
  if "records" in results:
    lines += ["### make_records, seconds", "",
              "| case | images | whole command | make_records call |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} ({c['source']}) | {c['images']:,} | "
              f"{_spread(c['command_seconds'], '{:.1f}')} | "
              f"{_spread(c['make_records_seconds'], '{:.1f}')} |"
              for name, c in results["records"].items()]
    lines.append("")
  if "accuracy" in results:
    lines += [f"### Time to accuracy ({results['seeds']} seeds, official test set once per "
              "final model)", "",
              "| recipe | target | reached | test accuracy | with TTA | training s "
              "| whole command s | validation accuracy |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["accuracy"]:
      name = " ".join([r["flagfile"], *r["extra_flags"]])
      target = f"{r['target']:.1%}" if r["target"] is not None else "-"
      lines.append(f"| {name} | {target} | {r['reached']}/{len(r['runs'])} | "
                   f"{_spread(r['test_accuracy'], '{:.2%}')} | "
                   f"{_spread(r['test_accuracy_tta'], '{:.2%}')} | "
                   f"{_spread(r['train_seconds'], '{:.1f}')} | "
                   f"{_spread(r['command_seconds'], '{:.1f}')} | "
                   f"{_spread(r['val_accuracy'], '{:.2%}')} |")
    lines += ["", "Targets count the plain test accuracy. With TTA: the same model averaged "
              "over one-pixel shifts (and mirror images, for datasets that are not digits). "
              "Training seconds run from the start of `train_and_evaluate` (reading "
              "records, building, tracing, every epoch's validation and checkpoints) to the "
              "final weights; the whole command adds the interpreter, imports and the export."]
  return "\n".join(lines) + "\n"


def device_label(facts):
  """Where the work ran, in words: the GPUs first where there are any, then the CPU."""
  cpu = facts.get("cpu_label", facts.get("cpu", "unknown CPU"))
  gpus = facts.get("gpus") or []
  return f"GPU: {', '.join(gpus)}; CPU: {cpu}" if gpus else f"CPU: {cpu}"


def machine():
  """What the figures were measured on, and the precision auto chooses there."""
  cpu = hardware.describe_cpu()
  found = hardware.detect()
  policy, reason = hardware.choose_precision(found)
  gpus = [f"{name} (compute capability {major}.{minor})"
          for name, (major, minor) in found.gpus]
  return {"cpu": cpu["model"], "cpu_vector_isa": cpu["vector_isa"], "cpu_bf16": cpu["bf16"],
          "cpu_label": hardware.cpu_label(), "cores": os.cpu_count(), "gpus": gpus,
          "auto_precision": policy, "auto_precision_reason": reason,
          "onednn": hardware.onednn_kernels(),
          "tensorflow": tf.__version__, "python": sys.version.split()[0],
          "platform": platform.platform()}
