"""Tests of the training loop, in process: metrics, checkpointed state, early stopping,
EMA and SWA, precision, tracing, SIGTERM, refits, synchronised BatchNorm and clipping.

Runs of `python -m tfmnist.train` itself are in tests/cli/test_train.py.
"""

import json
import os
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import train_fixtures as tfx
from tfmnist import hardware, run_dir
from tfmnist.data import augment as augment_lib
from tfmnist.data import pipeline, pixels, records
from tfmnist.models import batch_norm_statistics
from tfmnist.training import checkpoints, optim, schedules, state
from tfmnist.training import config as config_lib
from tfmnist.training import export as export_lib
from tfmnist.training import loop as loop_lib
from tfmnist.training import step as step_lib
from tfmnist.errors import DataError

STEPS_PER_EPOCH = 15  # 480 train images / global batch 32.
TOTAL_STEPS = 2 * STEPS_PER_EPOCH


def _metrics(model_dir):
  return run_dir.RunDir(model_dir).read_metrics()


def _accumulator(folder):
  accumulator = event_accumulator.EventAccumulator(
      folder, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def _steps(accumulator, tag):
  return [e.step for e in accumulator.Tensors(tag)]


def _signal_after_step(monkeypatch, at_step):
  """Makes the train loop send this process SIGTERM once the run reaches `at_step`."""
  make_loop = step_lib.make_train_loop

  def make(config, run, per_replica_batch_size):
    loop = make_loop(config, run, per_replica_batch_size)

    def loop_then_signal(iterator, num_steps):
      losses = loop(iterator, num_steps)
      if int(run.step.numpy()) == at_step:
        # Only with the loop's handler in place: the default would end pytest.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        os.kill(os.getpid(), signal.SIGTERM)
      return losses

    return loop_then_signal

  monkeypatch.setattr(step_lib, "make_train_loop", make)


def _validation_steps(model_dir):
  return _steps(_accumulator(os.path.join(model_dir, "logs", "validation")), "accuracy")


def test_metrics_json_times_the_run_up_to_its_final_weights(tmp_path, records_dir):
  start = time.perf_counter()
  final = tfx.train_in_process(tmp_path / "run", records_dir, export=True)
  elapsed = time.perf_counter() - start
  assert 0 < final["train_seconds"] < elapsed  # The export comes after the clock stops.
  assert _metrics(str(tmp_path / "run"))["train_seconds"] == final["train_seconds"]


def test_schedule_and_plateau_state_are_in_the_checkpoint(tmp_path, records_dir):
  # A learning rate too small to change any prediction: accuracy stalls, so
  # the plateau cuts after every evaluation but the first (patience 1).
  fields = dict(epochs=3, learning_rate=1e-9, schedule="cosine", final_lr_fraction=0.5,
                plateau=schedules.PlateauConfig(monitor="val_accuracy", factor=0.5, patience=1))
  final = tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  total = 3 * STEPS_PER_EPOCH
  assert final["step"] == total
  values = tfx.checkpoint_values(str(tmp_path / "run" / "checkpoints"))
  assert float(values["plateau/scale/.ATTRIBUTES/VARIABLE_VALUE"]) == 0.25
  assert float(values["plateau/best/.ATTRIBUTES/VARIABLE_VALUE"]) == \
      pytest.approx(final["val_accuracy"])
  assert int(values["plateau/wait/.ATTRIBUTES/VARIABLE_VALUE"]) == 0
  assert int(values["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == total
  # A fresh run restored from the checkpoint continues the schedule where it was.
  run, _ = tfx.restore_run(tmp_path / "run", records_dir, **fields)
  assert int(run.optimizer.iterations.numpy()) == total
  assert run.learning_rate == pytest.approx(1e-9 * 0.5 * 0.25, rel=1e-5)



def test_early_stopping_stops_before_the_epoch_limit(tmp_path, records_dir):
  # Nothing improves with a zero learning rate: epoch 1 sets the best, epochs
  # 2 and 3 are stale, and patience 2 stops after epoch 3 of 10.
  final = tfx.train_in_process(tmp_path / "run", records_dir, epochs=10, learning_rate=0.0,
                               early_stopping_patience=2, global_batch_size=96)
  steps_per_epoch = 480 // 96
  assert final["stopped_early"] is True
  assert final["step"] == 3 * steps_per_epoch
  assert final["epochs"] == 3.0
  assert _metrics(str(tmp_path / "run"))["stopped_early"] is True


def test_ema_weights_are_exported(tmp_path, records_dir):
  fields = dict(optimizer=optim.OptimizerConfig(ema_decay=0.9), export=True,
                learning_rate=3e-3)
  final = tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  assert final["step"] == STEPS_PER_EPOCH and np.isfinite(final["val_loss"])
  exported = tf.saved_model.load(str(tmp_path / "run" / "export"))
  run, val = tfx.restore_run(tmp_path / "run", records_dir, **fields)
  images = val.image[:50]
  served = exported.signatures["serving_default"](images=images)["probabilities"].numpy()
  x = tf.cast(images, tf.float32) / 255.0

  def probabilities():
    return tf.nn.softmax(run.model(x, training=False)).numpy()

  raw = probabilities()
  with checkpoints.EmaWeights(run.model, run.weight_average):
    averaged = probabilities()
  np.testing.assert_allclose(served, averaged, atol=1e-5)
  assert np.abs(served - raw).max() > 1e-3  # The EMA is not the raw weights.
  np.testing.assert_array_equal(probabilities(), raw)  # And the raw weights come back.


# A CPU with AVX-512 whose oneDNN is capped at AVX2: no bfloat16 convolution (hardware).
CAPPED_AVX512 = hardware.Machine(cpu="Capped CPU", cpu_flags=frozenset({"avx2", "avx512f"}),
                                 env=(("ONEDNN_MAX_CPU_ISA", "AVX2"),))


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_with_finite_loss(tmp_path, records_dir, precision):
  final = tfx.train_in_process(tmp_path / "run", records_dir, precision=precision,
                               epochs=0.5)
  assert final["step"] == 8
  assert np.isfinite(final["val_loss"])
  assert final["val_count"] == 120


def test_a_mixed_precision_run_exports_a_model_that_computes_in_float32(tmp_path, records_dir):
  model_dir = tmp_path / "run"
  tfx.train_in_process(model_dir, records_dir, model="fast_cnn", precision="mixed_bfloat16",
                       epochs=1, export=True)
  config = config_lib.from_dict(run_dir.RunDir(model_dir).read_config(), str(model_dir))
  export_lib.export_checkpoint(config, "latest", str(tmp_path / "again"), list("0123456789"))
  # The export computes in float32, so a machine that cannot train in bfloat16 exports it too.
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(hardware, "detect", lambda strategy=None: CAPPED_AVX512)
    export_lib.export_checkpoint(config, "latest", str(tmp_path / "capped"), list("0123456789"))
  for export_dir in (model_dir / "export", tmp_path / "again", tmp_path / "capped"):
    dtypes = export_lib.graph_dtypes(str(export_dir))
    assert "float32" in dtypes and "bfloat16" not in dtypes, (export_dir, dtypes)
  # The float32 export classifies as the bfloat16 model that trained does.
  _, images, _ = pipeline.read_labelled(records_dir, "mnist", "validation")
  served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"](
      images=tf.constant(images))["probabilities"].numpy()
  trained, _ = export_lib.restore_model(config, "latest", 10, policy="mixed_bfloat16")
  assert trained.compute_dtype == "bfloat16"
  logits = trained(pixels.normalize(images), training=False)
  np.testing.assert_array_equal(served.argmax(1), logits.numpy().argmax(1))
  keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_is_recorded_and_kept_when_the_run_resumes(tmp_path, records_dir,
                                                                   capsys):
  model_dir = tmp_path / "run"
  tfx.train_in_process(model_dir, records_dir, precision="auto", epochs=1)
  policy, reason = hardware.choose_precision(hardware.detect())
  manifest = json.loads((model_dir / "manifest.json").read_text())
  assert manifest["precision"] == {"requested": "auto", "policy": policy, "reason": reason}
  assert manifest["cpu"] == hardware.describe_cpu()
  assert f"precision: {policy} (auto: {reason})" in capsys.readouterr().out
  # As if the run had started on a machine of the other kind: its choice stays.
  other = "float32" if policy == "mixed_bfloat16" else "mixed_bfloat16"
  manifest["precision"].update(policy=other, reason="started elsewhere")
  (model_dir / "manifest.json").write_text(json.dumps(manifest))
  final = tfx.train_in_process(model_dir, records_dir, precision="auto", epochs=2)
  assert final["step"] == TOTAL_STEPS
  assert (f"precision: {other} (auto: chosen when the run started: started elsewhere)"
          in capsys.readouterr().out)
  kept = json.loads((model_dir / "manifest.json").read_text())["precision"]
  assert kept["requested"] == "auto" and kept["policy"] == other


def test_an_unknown_precision_is_one_line(tmp_path, records_dir):
  with pytest.raises(ValueError, match="unknown precision 'bfloat8'; choose one of auto, "):
    tfx.train_in_process(tmp_path / "run", records_dir, precision="bfloat8")


def test_bfloat16_where_onednn_cannot_compute_it_is_one_line(tmp_path, records_dir,
                                                             monkeypatch):
  monkeypatch.setattr(hardware, "detect", lambda strategy=None: CAPPED_AVX512)
  model_dir = tmp_path / "run"
  with pytest.raises(ValueError) as raised:
    tfx.train_in_process(model_dir, records_dir, precision="mixed_bfloat16", epochs=1)
  message = str(raised.value)
  assert message.startswith("precision mixed_bfloat16 (asked for) cannot run here: "
                            "ONEDNN_MAX_CPU_ISA=AVX2 leaves oneDNN no bfloat16 convolution")
  assert "Capped CPU" in message and "TF_ENABLE_ONEDNN_OPTS=0" in message
  assert "\n" not in message
  assert not model_dir.exists() or not any(model_dir.iterdir())
  # auto chooses float32 there, and trains.
  assert config_lib.resolve_precision("auto", None, CAPPED_AVX512)[0] == "float32"


def test_a_bfloat16_run_resumed_where_onednn_cannot_compute_it_is_one_line():
  recorded = {"requested": "auto", "policy": "mixed_bfloat16", "reason": "started elsewhere"}
  policy, _ = config_lib.resolve_precision("auto", recorded, CAPPED_AVX512)
  assert policy == "mixed_bfloat16"  # The run keeps its first choice,
  with pytest.raises(ValueError, match=r"^precision mixed_bfloat16 \(the run's --precision=auto "
                                       r"chose when it started\) cannot run here: "):
    config_lib.check_trainable("auto", policy, CAPPED_AVX512)  # which cannot train here.
  # A float32 run resumes there as it started.
  config_lib.check_trainable("auto", "float32", CAPPED_AVX512)


def test_loops_are_traced_once(tmp_path, records_dir, monkeypatch):
  # Loops of 4, 4, 4 and 3 steps: the count is a tensor, so one trace serves all.
  traced = {}
  for name in ("make_train_loop", "make_eval_fn"):
    make = getattr(step_lib, name)
    monkeypatch.setattr(step_lib, name, lambda *args, make=make, name=name: traced.setdefault(
        name, make(*args)))
  final = tfx.train_in_process(tmp_path / "run", records_dir, epochs=2, steps_per_loop=4)
  assert final["step"] == TOTAL_STEPS
  assert traced["make_train_loop"].experimental_get_tracing_count() == 1
  assert traced["make_eval_fn"].experimental_get_tracing_count() == 1


def test_autograph_converts_no_tfmnist_function(tmp_path, records_dir, monkeypatch):
  # Tracing with autograph rewrote the source of the step, the augmentation
  # and the model at every start (about 3 s of a one-epoch run). The
  # transpiler is TensorFlow's internal one: every conversion passes it.
  from tensorflow.python.autograph.pyct import transpiler  # pylint: disable=g-import-not-at-top
  converted = []
  transform = transpiler.PyToPy.transform

  def recording(self, obj, user_context):
    converted.append(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)}")
    return transform(self, obj, user_context)

  monkeypatch.setattr(transpiler.PyToPy, "transform", recording)
  augment = augment_lib.AugmentConfig(rotation_degrees=10, shift_x=0.1, noise_factor=0.1,
                                      erase_probability=0.5)
  final = tfx.train_in_process(tmp_path / "run", records_dir, augment=augment, export=True)
  assert final["step"] == STEPS_PER_EPOCH
  assert [name for name in converted if name.startswith("tfmnist")] == []
  # The recorder sees tfmnist code that is traced with autograph on.
  tf.function(pixels.normalize)(np.zeros([1, 28, 28, 1], np.uint8))
  assert "tfmnist.data.pixels.normalize" in converted


def test_sigterm_at_an_epoch_end_evaluates_that_epoch_first(tmp_path, records_dir,
                                                             monkeypatch, capsys):
  model_dir = str(tmp_path / "run")
  _signal_after_step(monkeypatch, STEPS_PER_EPOCH)
  stopped = tfx.train_in_process(model_dir, records_dir, epochs=2, steps_per_loop=5)
  assert stopped == {"preempted": True, "step": STEPS_PER_EPOCH}
  assert f"step {STEPS_PER_EPOCH}: val_loss=" in capsys.readouterr().out
  monkeypatch.undo()
  final = tfx.train_in_process(model_dir, records_dir, epochs=2, steps_per_loop=5)
  assert final["step"] == TOTAL_STEPS
  # Every epoch was evaluated once, as in an uninterrupted run.
  assert _validation_steps(model_dir) == [STEPS_PER_EPOCH, TOTAL_STEPS]


def test_sigterm_in_the_last_loop_still_finishes_the_run(tmp_path, records_dir, monkeypatch):
  model_dir = str(tmp_path / "run")
  _signal_after_step(monkeypatch, STEPS_PER_EPOCH)
  final = tfx.train_in_process(model_dir, records_dir, epochs=1, steps_per_loop=5)
  assert final["step"] == STEPS_PER_EPOCH and "preempted" not in final
  assert _metrics(model_dir)["val_count"] == 120


def test_rerunning_a_finished_run_keeps_its_metrics(tmp_path, records_dir):
  model_dir = str(tmp_path / "run")
  first = tfx.train_in_process(model_dir, records_dir)
  second = tfx.train_in_process(model_dir, records_dir)
  assert second == first
  assert _metrics(model_dir)["val_accuracy"] == first["val_accuracy"]


def test_refit_trains_on_train_and_validation_without_validating(tmp_path, records_dir, capsys):
  model_dir = tmp_path / "refit"
  fields = dict(train_splits=("train", "validation"), validation_split="",
                global_batch_size=40, epochs=2, export=True)
  final = tfx.train_in_process(model_dir, records_dir, **fields)
  # 600 images make 15 steps of 40 an epoch; train alone (480) would make 12.
  assert final["step"] == 2 * 15
  assert final["epochs"] == 2.0
  assert not [key for key in final if key.startswith("val_")]
  assert tf.train.get_checkpoint_state(str(model_dir / "checkpoints")).all_model_checkpoint_paths \
      == [str(model_dir / "checkpoints" / f"ckpt-{step}") for step in (15, 30)]
  assert not os.path.exists(model_dir / "best")
  assert not os.path.exists(model_dir / "logs" / "validation")
  assert os.path.exists(model_dir / "export" / "saved_model.pb")
  assert "step 15: checkpoint saved (no validation split)" in capsys.readouterr().out
  with open(model_dir / "manifest.json") as f:
    assert json.load(f)["train_splits"] == ["train", "validation"]
  # A rerun of the finished run trains and evaluates nothing.
  assert tfx.train_in_process(model_dir, records_dir, **fields) == final


@pytest.mark.parametrize("fields, message", [
    (dict(train_splits=("train", "validation")),
     "validation_split=validation is also in train_splits; set validation_split= (empty) "
     "to train without validation"),
    (dict(validation_split="", early_stopping_patience=2),
     "early_stopping_patience needs a validation split; drop it or set validation_split"),
    (dict(validation_split="", early_stopping_patience=2,
          plateau=schedules.PlateauConfig(monitor="val_loss")),
     "plateau_monitor and early_stopping_patience need a validation split; drop them or "
     "set validation_split"),
    (dict(train_splits=()), "train_splits is empty; name the splits to train on"),
])
def test_refit_settings_that_cannot_work_are_refused(tmp_path, records_dir, fields, message):
  with pytest.raises(ValueError) as raised:
    tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  assert str(raised.value) == message
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_train_split_the_records_lack_is_refused(tmp_path, records_dir):
  with pytest.raises(DataError, match=r"^mnist has no 'extra' split \(has train, validation, "
                     r"test\)$"):
    tfx.train_in_process(tmp_path / "run", records_dir, train_splits=("train", "extra"))


def test_rerunning_an_early_stopped_run_trains_no_further(tmp_path, records_dir):
  fields = dict(epochs=10, learning_rate=0.0, early_stopping_patience=1, global_batch_size=96)
  first = tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  assert first["stopped_early"] and first["step"] == 2 * 5
  second = tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  assert second == first


STEP_ROUNDING = 1e-3


def _shadow_steps(records_dir, tmp_path, strategies, synchronized=True):
  """How far apart each step takes two runs that start it alike.

  Both runs read the same global batches. Before every step the second run
  gets the first run's model and optimizer variables, so each step's
  difference is that step's own rounding, never an accumulation of earlier
  ones. The runs are compared by what their models compute: the logits of
  the validation images (inference mode, so the moving statistics count too)
  from the first run's model with either run's weights.

  Returns:
    [|logits(two) - logits(one)| / |logits(one) - logits(before the step)|]
    of each step, maxima over images and classes.
  """
  tfx.register_tiny_bn()
  config = tfx.train_config(tmp_path, records_dir, model="tiny_bn", epochs=2,
                            augment=augment_lib.AugmentConfig(rotation_degrees=10, shift_x=0.1))
  keras.utils.set_random_seed(config.seed)
  info = records.read_info(records_dir, "mnist")
  files = records.split_files(records_dir, "mnist", "train")
  counts = [s["count"] for s in info["splits"]["train"]["shards"]]
  val = pipeline.read_examples(records.split_files(records_dir, "mnist", "validation"))
  runs, loops, iterators = [], [], []
  for strategy in strategies:
    per_replica = config.global_batch_size // strategy.num_replicas_in_sync
    run = state.create_run(config, strategy, info["num_classes"], val.image[:per_replica],
                           TOTAL_STEPS, STEPS_PER_EPOCH)
    dataset, _ = pipeline.distribute_train(strategy, files, counts, config.global_batch_size,
                                       config.seed, 0, config.sharding)
    runs.append(run)
    loops.append(step_lib.make_train_loop(config, run, per_replica))
    iterators.append(iter(dataset))
  for layer in runs[1].model.stack:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = synchronized
  images = pixels.normalize(val.image)

  def variables_of(run):
    return list(run.model.variables) + list(run.optimizer.variables)

  def logits_with(values):
    for variable, value in zip(variables_of(runs[0]), values):
      variable.assign(value)
    return runs[0].model(images, training=False).numpy().astype(np.float64)

  ratios = []
  for _ in range(TOTAL_STEPS):
    for mine, theirs in zip(variables_of(runs[1]), variables_of(runs[0])):
      mine.assign(theirs.numpy())
    before = logits_with([v.numpy() for v in variables_of(runs[0])])
    for loop, iterator in zip(loops, iterators):
      loop(iterator, tf.constant(1))
    one = [v.numpy() for v in variables_of(runs[0])]
    two = logits_with([v.numpy() for v in variables_of(runs[1])])
    after = logits_with(one)
    ratios.append(np.abs(two - after).max() / np.abs(after - before).max())
  return ratios


def test_batchnorm_two_replicas_take_the_step_one_replica_takes(records_dir, tmp_path,
                                                                 two_replicas):
  """Synchronised BatchNorm: each step of two replicas is one replica's step.

  One replica trains through TensorFlow's fused BatchNorm, two replicas through
  Keras's synchronised path (moments from all-reduced sums). Both compute the
  same step in float32 in different orders: the moments of each channel and
  every kernel gradient are sums over the global batch (n = 32 x 26 x 26 =
  21,632 terms in the first layer), which one replica adds in one order and
  two replicas as two halves. Rounding then differs by about sqrt(n) x 6e-8 =
  9e-6 of the terms' size. Measured on the logits, as a fraction of the
  step's own change, it was 4e-6 at the median step and at most 9.4e-5 (where
  Adam divides a gradient near its epsilon by itself) over 6 seeds x 30 steps,
  the same with oneDNN's AVX-512 and AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2).
  STEP_ROUNDING allows 1e-3. Per-replica statistics, the defect this guards
  against, moved the logits by 2e-2 to 0.1 on every step; the second half
  checks that the test sees them.

  Two whole runs cannot be held to a rounding tolerance: training amplifies
  these differences without bound. A max-pool window whose two largest inputs
  are within rounding of each other sends its gradient to another input, and
  Adam's moments carry it on: 30-step two-replica runs of this model differed
  by 2e-6 with AVX-512 kernels and 1.1e-4 with AVX2 ones, from the same
  per-step agreement.
  """
  strategies = (tf.distribute.get_strategy(), two_replicas)
  synced = _shadow_steps(records_dir, tmp_path / "synced", strategies)
  assert len(synced) == TOTAL_STEPS
  assert max(synced) < STEP_ROUNDING, synced
  keras.backend.clear_session()
  unsynced = _shadow_steps(records_dir, tmp_path / "unsynced", strategies, synchronized=False)
  assert min(unsynced) > STEP_ROUNDING, unsynced


def test_weight_average_covers_batch_norm_statistics(tmp_path, records_dir):
  """With a BatchNorm model the EMA swaps in the averaged moving statistics too, and
  the raw values come back afterwards."""
  fields = dict(model="strided_bn", optimizer=optim.OptimizerConfig(ema_decay=0.5),
                learning_rate=3e-3, epochs=1)
  tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  run, val = tfx.restore_run(tmp_path / "run", records_dir, **fields)
  moving = [v for v in run.model.variables if "moving_mean" in v.name]
  assert moving and run.weight_average is not None
  raw = [v.numpy() for v in run.model.variables]
  averages = [a.numpy() for a in run.weight_average.averages]
  with checkpoints.EmaWeights(run.model, run.weight_average):
    swapped = [v.numpy() for v in run.model.variables]
  for value, average in zip(swapped, averages):
    np.testing.assert_array_equal(value, average)
  index = [i for i, v in enumerate(run.model.variables) if "moving_mean" in v.name][0]
  assert np.abs(averages[index] - raw[index]).max() > 0  # Statistics are averaged too.
  for value, before in zip([v.numpy() for v in run.model.variables], raw):
    np.testing.assert_array_equal(value, before)  # And the raw ones come back.


def _batch_norm_statistics(model):
  return [(layer.moving_mean.numpy(), layer.moving_variance.numpy())
          for layer in batch_norm_statistics.batch_norm_layers(model)]


def _train_images(records_dir):
  return pipeline.read_examples(records.split_files(records_dir, "mnist", "train")).image


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_recomputed_batch_norm_statistics_are_validated_checkpointed_and_exported(
    tmp_path, records_dir, ema_decay):
  tfx.register_tiny_bn()
  fields = dict(model="tiny_bn", optimizer=optim.OptimizerConfig(ema_decay=ema_decay),
                learning_rate=3e-3, export=True, recompute_bn_statistics=True)
  messages = []
  final = tfx.train_in_process(tmp_path / "run", records_dir, say=messages.append, **fields)
  assert [m for m in messages if "BatchNorm statistics of 2 layers recomputed over 480 "
          "training images" in m], messages
  run, val = tfx.restore_run(tmp_path / "run", records_dir, **fields)
  with checkpoints.EmaWeights(run.model, run.weight_average):
    saved = _batch_norm_statistics(run.model)
    # What the checkpoint holds is what measuring its weights again gives.
    copy = export_lib.float32_copy(run.model, "tiny_bn", 10)
    batch_norm_statistics.recompute(copy, _train_images(records_dir), batch_size=60)
    for (mean, variance), (again_mean, again_variance) in zip(saved, _batch_norm_statistics(copy)):
      np.testing.assert_allclose(mean, again_mean, rtol=1e-6, atol=1e-7)
      np.testing.assert_allclose(variance, again_variance, rtol=1e-6)
    keras_probabilities = tf.nn.softmax(run.model(pixels.normalize(val.image),
                                                  training=False)).numpy()
  exported = tf.saved_model.load(str(tmp_path / "run" / "export"))
  served = exported.signatures["serving_default"](images=val.image)["probabilities"].numpy()
  np.testing.assert_allclose(served, keras_probabilities, atol=1e-5)
  # The final validation is the recomputed model's.
  accuracy = np.mean(np.argmax(served, 1) == val.label.numpy())
  assert final["val_accuracy"] == pytest.approx(accuracy, abs=1e-9)
  # best/ kept the same step as validated before the recomputation.
  best = tf.train.latest_checkpoint(str(tmp_path / "run" / "best"))
  run.checkpoint.restore(best).assert_existing_objects_matched()
  with checkpoints.EmaWeights(run.model, run.weight_average):
    before = _batch_norm_statistics(run.model)
  assert max(np.abs(a[0] - b[0]).max() for a, b in zip(before, saved)) > 1e-4


def test_rerunning_a_finished_run_with_recompute_bn_statistics_recomputes_once_for_all(
    tmp_path, records_dir):
  tfx.register_tiny_bn()
  model_dir = str(tmp_path / "run")
  fields = dict(model="tiny_bn", learning_rate=3e-3)
  first = tfx.train_in_process(model_dir, records_dir, **fields)
  before = _batch_norm_statistics(tfx.restore_run(model_dir, records_dir, **fields)[0].model)
  second = tfx.train_in_process(model_dir, records_dir, recompute_bn_statistics=True, **fields)
  assert second["step"] == first["step"]
  assert second["train_seconds"] == first["train_seconds"]  # Nothing more was trained.
  assert second["val_loss"] != first["val_loss"]
  after = _batch_norm_statistics(tfx.restore_run(model_dir, records_dir, **fields)[0].model)
  assert max(np.abs(a[1] - b[1]).max() for a, b in zip(before, after)) > 1e-4
  third = tfx.train_in_process(model_dir, records_dir, recompute_bn_statistics=True, **fields)
  assert third == second
  again = _batch_norm_statistics(tfx.restore_run(model_dir, records_dir, **fields)[0].model)
  for (mean, variance), (again_mean, again_variance) in zip(after, again):
    np.testing.assert_array_equal(mean, again_mean)
    np.testing.assert_array_equal(variance, again_variance)


def test_recompute_bn_statistics_without_batch_norm_is_refused_before_training(
    tmp_path, records_dir):
  with pytest.raises(ValueError, match="^recompute_bn_statistics: model 'mlp' has no "
                     "BatchNorm layers to recompute$"):
    tfx.train_in_process(tmp_path / "run", records_dir, recompute_bn_statistics=True)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_weight_average_update_formula():
  variable = tf.Variable([1.0, 2.0])
  average = optim.WeightAverage([variable], decay=0.75)
  variable.assign([5.0, 6.0])
  average.update([variable], step=1000)  # Past the warmup: the decay as given.
  np.testing.assert_allclose(average.averages[0].numpy(), [2.0, 3.0])


def test_weight_average_decay_warms_up():
  """The first updates forget the initial weights fast; the decay reaches its
  set value at (1 + n) / (10 + n) = decay and stays there."""
  variable = tf.Variable([1.0])
  average = optim.WeightAverage([variable], decay=0.999)
  variable.assign([11.0])
  average.update([variable], step=0)  # decay 1/10
  np.testing.assert_allclose(average.averages[0].numpy(), [10.0], rtol=1e-6)
  decays = [float(average.decay_at(n)) for n in (0, 1, 8, 8000, 9000, 10**6)]
  np.testing.assert_allclose(decays[:3], [0.1, 2 / 11, 0.5], rtol=1e-6)
  assert decays[3] < 0.999 and decays == sorted(decays)
  np.testing.assert_allclose(decays[4:], [0.999, 0.999], rtol=1e-6)


def test_swa_is_the_equal_mean_of_the_weights_from_its_start():
  """Before the start the update leaves the average alone and `follow` copies
  the weights in; from the start the updates average and `follow` does nothing."""
  variable = tf.Variable([0.0])
  average = optim.WeightAverage([variable], start_step=2)
  for step, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0]):
    variable.assign([value])
    average.update([variable], step=step)
    if step < 2:
      np.testing.assert_array_equal(average.averages[0].numpy(), [0.0 if step == 0 else 1.0])
    average.follow([variable], step=step + 1)
    if step < 2:  # Before the start the average follows the weights.
      np.testing.assert_array_equal(average.averages[0].numpy(), [value])
  np.testing.assert_allclose(average.averages[0].numpy(), [(4.0 + 8.0 + 16.0) / 3], rtol=1e-6)
  ema = optim.WeightAverage([variable], decay=0.5)
  variable.assign([2.0])
  ema.follow([variable], step=0)
  np.testing.assert_array_equal(ema.averages[0].numpy(), [16.0])
  for fields in (dict(decay=0.9, start_step=2), {}):
    with pytest.raises(ValueError, match=r"EMA \(decay\) or SWA \(start_step\): give one of"):
      optim.WeightAverage([variable], **fields)


def test_swa_run_evaluates_exports_and_resumes_the_mean_of_each_step_from_its_start(
    tmp_path, records_dir):
  """SWA from the middle of epoch 2 of 2 (step 22 of 30): every step's raw
  weights are checkpointed, each checkpoint before the start holds them as
  its average, and the average the run validates and exports is their mean
  from the start on; a run that trains 4 steps per loop (one loop straddles
  the start), stopped inside the averaging and resumed, ends bit for bit the
  same."""
  fields = dict(epochs=2, swa_start_epoch=1.5, learning_rate=3e-3, schedule="cosine",
                final_lr_fraction=0.5, deterministic=True, steps_per_loop=1)
  start = 22  # round(1.5 x 15)
  final = tfx.train_in_process(tmp_path / "run", records_dir, export=True,
                               checkpoint_every_steps=1, keep_checkpoints=TOTAL_STEPS, **fields)
  folder = str(tmp_path / "run" / "checkpoints")
  raw = {step: tfx.checkpoint_values(os.path.join(folder, f"ckpt-{step}"))
         for step in range(1, TOTAL_STEPS + 1)}
  run, val = tfx.restore_run(tmp_path / "run", records_dir, **fields)
  names = [n for n in raw[TOTAL_STEPS] if n.startswith("model/") and "OPTIMIZER" not in n]
  assert names and len(run.weight_average.averages) == len(run.model.variables)
  for step in (1, STEPS_PER_EPOCH, start):
    model_values = [raw[step][n] for n in names]
    averages = [v for n, v in raw[step].items() if n.startswith("weight_average/")]
    assert averages and all(any(np.array_equal(a, m) for m in model_values) for a in averages), step
  model_values = [v.numpy() for v in run.model.variables]
  for value, average in zip(model_values, run.weight_average.averages):
    name = next(n for n in names if np.array_equal(raw[TOTAL_STEPS][n], value))
    mean = np.mean([raw[step][name] for step in range(start + 1, TOTAL_STEPS + 1)], axis=0)
    np.testing.assert_allclose(average.numpy(), mean, rtol=1e-5, atol=1e-6)
  # The cosine ended at the start and held its floor through the averaging.
  assert run.learning_rate == pytest.approx(3e-3 * 0.5, rel=1e-6)
  exported = tf.saved_model.load(str(tmp_path / "run" / "export"))
  served = exported.signatures["serving_default"](images=val.image)["probabilities"].numpy()
  with checkpoints.EmaWeights(run.model, run.weight_average):
    averaged = tf.nn.softmax(run.model(pixels.normalize(val.image), training=False)).numpy()
  np.testing.assert_allclose(served, averaged, atol=1e-5)
  assert final["val_accuracy"] == pytest.approx(
      np.mean(np.argmax(served, 1) == val.label.numpy()), abs=1e-9)
  # Stopped after 24 steps, 2 into the average, then resumed; loops of steps
  # 15-19 and 19-23 in epoch 2, the second across the start.
  chunked = {**fields, "steps_per_loop": 4}
  tfx.train_in_process(tmp_path / "resumed", records_dir, **{**chunked, "epochs": 1.6})
  tfx.train_in_process(tmp_path / "resumed", records_dir, **chunked)
  # (Its shorter first run validated at step 24 as well, one stale epoch more.)
  weights = [tfx.checkpoint_values(path) for path in (folder, tmp_path / "resumed" / "checkpoints")]
  tfx.assert_identical(*[{n: v for n, v in values.items() if n.split("/")[0] in
                          ("model", "optimizer", "weight_average", "step")} for values in weights])


@pytest.mark.parametrize("fields, message", [
    (dict(swa_start_epoch=1, epochs=2, optimizer=optim.OptimizerConfig(ema_decay=0.9)),
     "swa_start_epoch=1 and ema_decay=0.9 are two weight averages; choose one"),
    (dict(swa_start_epoch=2, epochs=2),
     "swa_start_epoch=2 must lie between warmup_epochs=0 and epochs=2; move it, or set it to 0 "
     "to train without the average"),
    (dict(swa_start_epoch=0.5, epochs=2, warmup_epochs=1),
     "swa_start_epoch=0.5 must lie between warmup_epochs=1 and epochs=2; move it, or set it to "
     "0 to train without the average"),
])
def test_swa_settings_that_cannot_work_are_refused(tmp_path, records_dir, fields, message):
  with pytest.raises(ValueError) as raised:
    tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  assert str(raised.value) == message
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_clipping_bounds_the_update_to_lr_times_clip_norm(tmp_path, records_dir, precision):
  """One SGD step (lr 1) with a tiny clip norm moves the weights by exactly the clip
  norm; under loss scaling the clip applies to the true, unscaled gradient."""
  import keras  # pylint: disable=g-import-not-at-top
  fields = dict(optimizer=optim.OptimizerConfig(name="sgd"), learning_rate=1.0,
                clip_norm=0.01, epochs=0.5 / STEPS_PER_EPOCH, precision=precision)
  config = tfx.train_config(tmp_path / "init", records_dir, **fields)
  try:
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(precision)
    setup = loop_lib.set_up(config)
    before = [v.numpy() for v in setup.run.model.trainable_variables]
  finally:
    keras.mixed_precision.set_global_policy("float32")
  final = tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  assert final["step"] == 1
  run, _ = tfx.restore_run(tmp_path / "run", records_dir, **fields)
  after = [v.numpy() for v in run.model.trainable_variables]
  keras.mixed_precision.set_global_policy("float32")
  moved = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before)))
  assert moved == pytest.approx(0.01, rel=1e-3)


