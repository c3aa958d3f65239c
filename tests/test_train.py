"""End-to-end tests of training: distribution, determinism, resumption, signals,
errors, flags, TensorBoard logs, early stopping, EMA and mixed precision.

Runs of `python -m tfmnist.train` start in the background when the module's
first test does (two at a time); the in-process tests come first and run
meanwhile, then the tests that read the background runs wait for theirs.
"""

import json
import os
import re
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import train_fixtures as tfx
from tfmnist import augment as augment_lib
from tfmnist import data, hardware, optim, prepare, records, schedules, train_lib
from tfmnist.errors import DataError

STEPS_PER_EPOCH = 15  # 480 train images / global batch 32.
TOTAL_STEPS = 2 * STEPS_PER_EPOCH
# The reference run: deterministic mlp (dropout 0.2) with augmentation, a
# checkpoint every 5 steps.
REFERENCE_FLAGS = ("--checkpoint_every_steps=5", "--rotation_degrees=10", "--zoom=0.1",
                   "--shift_x=0.1", "--shift_y=0.1", "--seed=3")
MIRRORED_FLAGS = ("--strategy=mirrored", "--num_virtual_devices=2")
SECONDS_PER_LOOP = 1.0  # Slows the signalled runs so the signal lands mid-run.


# ----------------------------------------------------------------------------
# Background runs
# ----------------------------------------------------------------------------


class Runs(tfx.BackgroundRuns):
  """The subprocess runs the tests compare; each method is one background job."""

  def args(self, name, *extra, model="mlp"):
    return tfx.train_args(self.model_dir(name), self.records_dir, *extra, model=model)

  def reference(self):
    return tfx.check(tfx.run(tfx.train_command(self.args("reference", *REFERENCE_FLAGS))))

  def twin(self):
    return tfx.check(tfx.run(tfx.train_command(self.args("twin", *REFERENCE_FLAGS))))

  def mirrored(self):
    return tfx.check(tfx.run(tfx.train_command(
        self.args("mirrored", *REFERENCE_FLAGS, *MIRRORED_FLAGS))))

  def resume(self):
    """One epoch, then the full command: (first, second) results."""
    first = tfx.check(tfx.run(tfx.train_command(
        self.args("resume", *REFERENCE_FLAGS, "--epochs=1"))))
    second = tfx.check(tfx.run(tfx.train_command(self.args("resume", *REFERENCE_FLAGS))))
    return first, second

  def _signalled(self, name, signum):
    """Starts the reference command slowed down, signals it after its first
    checkpoint, then reruns the full command.

    Returns:
      (signalled run, {step: step variable} of the checkpoints it left, rerun).
    """
    args = self.args(name, *REFERENCE_FLAGS)
    signalled = _start_and_signal(args, self.model_dir(name), signum)
    folder = os.path.join(self.model_dir(name), "checkpoints")
    saved = {step: _step(tfx.checkpoint_values(os.path.join(folder, f"ckpt-{step}")))
             for step in _checkpoint_steps(folder)}
    rerun = tfx.check(tfx.run(tfx.train_command(args)))
    return signalled, saved, rerun

  def sigkill(self):
    return self._signalled("sigkill", signal.SIGKILL)

  def sigterm(self):
    return self._signalled("sigterm", signal.SIGTERM)

  def nonfinite(self):
    """A copy of the finished reference run, continued with a huge learning rate."""
    self.result("reference")
    model_dir = tfx.copy_tree(self.model_dir("reference"), self.root / "nonfinite")
    before = _file_states(model_dir)
    args = tfx.train_args(model_dir, self.records_dir, *REFERENCE_FLAGS, "--epochs=3",
                          "--learning_rate=1e30")
    return before, tfx.run(tfx.train_command(args))

  def uneven_batch(self):
    return tfx.run(tfx.train_command(
        self.args("uneven_batch", *MIRRORED_FLAGS, "--global_batch_size=33")))

  def helpfull(self):
    return tfx.run(tfx.train_command(["--helpfull"]))

  def flagfile(self):
    """Flags parsed from a flagfile with comments, then overridden on the command line."""
    path = self.root / "run.flags"
    path.write_text("# A run of the tests.\n"
                    "--model=lenet5\n"
                    "\n"
                    "--learning_rate=0.5  \n"
                    "# --epochs=99 is commented out\n"
                    "--global_batch_size=64\n"
                    "--rotation_degrees=7\n")
    code = ("import dataclasses, json, sys\n"
            "from absl import flags\n"
            "from tfmnist import flagfiles, train\n"
            "flags.FLAGS(sys.argv)\n"
            "config = train.config_from_flags()\n"
            "print(json.dumps({'config': dataclasses.asdict(config),\n"
            "                  'flags_text': config.flags_text,\n"
            "                  'warnings': flagfiles.overridden(sys.argv, flags.FLAGS)}))\n")
    return tfx.check(tfx.run([tfx.PYTHON, "-c", code, "--model=resnet", "--epochs=4",
                              f"--flagfile={path}", "--model_dir=/tmp/x",
                              "--global_batch_size=16"]))


# Jobs in start order (a job may wait only for an earlier one), and the jobs
# each test reads, started together when the module starts: only the jobs of
# the selected tests run.
JOB_ORDER = ("reference", "mirrored", "twin", "resume", "sigkill",
             "sigterm", "nonfinite", "uneven_batch", "flagfile", "helpfull")
NEEDS = {
    "test_one_and_two_replicas_train_the_same_weights": ("reference", "mirrored"),
    "test_deterministic_runs_are_bit_identical": ("reference", "twin"),
    "test_resumed_run_equals_an_uninterrupted_run": ("reference", "resume"),
    "test_sigkill_then_rerun_equals_an_uninterrupted_run": ("reference", "sigkill"),
    "test_sigterm_checkpoints_and_exits_143": ("reference", "sigterm"),
    "test_nonfinite_loss_stops_with_one_line_and_keeps_checkpoints": ("reference", "nonfinite"),
    "test_global_batch_not_divisible_by_replicas_is_one_line": ("uneven_batch",),
    "test_helpfull_lists_the_flags": ("helpfull",),
    "test_flagfile_with_comments_and_later_flags_override": ("flagfile",),
    "test_run_files_exist": ("reference",),
    "test_tensorboard_logs": ("reference",),
}


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
  return tfx.shared_records(tmp_path_factory)


runs = tfx.runs_fixture(Runs, "runs", JOB_ORDER, NEEDS,
                        implied={"nonfinite": ("reference",)})


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _checkpoint_steps(folder):
  """Steps of the checkpoints in a folder, from their file names."""
  if not os.path.isdir(folder):
    return []
  return sorted({int(m.group(1)) for name in os.listdir(folder)
                 if (m := re.match(r"ckpt-(\d+)\.index$", name))})


def _start_and_signal(args, model_dir, signum, timeout=180):
  """Runs the command slowed down; signals it once its first checkpoint is written.

  Returns:
    CompletedProcess of the signalled run.
  """
  state_file = os.path.join(model_dir, "checkpoints", "checkpoint")
  log_dir = os.path.dirname(model_dir)
  name = os.path.basename(model_dir)
  with open(os.path.join(log_dir, f"{name}.out"), "w+") as out, \
       open(os.path.join(log_dir, f"{name}.err"), "w+") as err:
    command = tfx.train_command(args, hooks=True)
    process = subprocess.Popen(
        command, stdout=out, stderr=err, text=True, cwd=str(tfx.REPO_ROOT),
        env=tfx.subprocess_env(**{tfx.SECONDS_PER_LOOP_ENV: SECONDS_PER_LOOP}))
    try:
      deadline = time.monotonic() + timeout
      while not os.path.exists(state_file) and process.poll() is None:
        assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
        time.sleep(0.02)
      if process.poll() is None:
        process.send_signal(signum)
      process.wait(timeout=timeout)
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
    out.seek(0)
    err.seek(0)
    return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())


def _file_states(folder):
  """{relative path: (mtime_ns, bytes)} of every file under `folder`."""
  states = {}
  for parent, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        states[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns, f.read())
  return states


def _error_lines(stderr):
  return [line for line in tfx.clean_stderr(stderr).splitlines()
          if line.startswith("train: error:")]


def _metrics(model_dir):
  with open(os.path.join(model_dir, "metrics.json")) as f:
    return json.load(f)


def _checkpoint(runs, name):
  return tfx.checkpoint_values(os.path.join(runs.model_dir(name), "checkpoints"))


def _step(values):
  return int(values["step/.ATTRIBUTES/VARIABLE_VALUE"])


def _accumulator(folder):
  accumulator = event_accumulator.EventAccumulator(
      folder, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0,
                             event_accumulator.SCALARS: 0})
  accumulator.Reload()
  return accumulator


def _plugin(accumulator, tag):
  return accumulator.SummaryMetadata(tag).plugin_data.plugin_name


def _steps(accumulator, tag):
  return [event.step for event in accumulator.Tensors(tag)]


def _image_size(accumulator, tag):
  """(width, height) of the last image of a TF2 image summary."""
  width, height = tf.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto)[:2]
  return int(width), int(height)


def _signal_after_step(monkeypatch, at_step):
  """Makes the train loop send this process SIGTERM once the run reaches `at_step`."""
  make_loop = train_lib.make_train_loop

  def make(config, run, per_replica_batch_size):
    loop = make_loop(config, run, per_replica_batch_size)

    def loop_then_signal(iterator, num_steps):
      losses = loop(iterator, num_steps)
      if int(run.step.numpy()) == at_step:
        # Only with train_lib's handler in place: the default would end pytest.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        os.kill(os.getpid(), signal.SIGTERM)
      return losses

    return loop_then_signal

  monkeypatch.setattr(train_lib, "make_train_loop", make)


def _validation_steps(model_dir):
  return _steps(_accumulator(os.path.join(model_dir, "logs", "validation")), "accuracy")


# ----------------------------------------------------------------------------
# In process (these run while the background runs work)
# ----------------------------------------------------------------------------


def test_missing_records_without_source_name_make_records(tmp_path, monkeypatch):
  # An empty local mirror keeps the attempt to fetch the files offline and quick.
  mirror = tmp_path / "mirror"
  mirror.mkdir()
  monkeypatch.setenv("TFMNIST_DOWNLOAD_BASE_URL", mirror.as_uri() + "/")
  config = tfx.train_config(tmp_path / "run", tmp_path / "records")
  with pytest.raises(DataError) as error:
    train_lib.ensure_records(config)
  message = str(error.value)
  assert "\n" not in message
  assert f"python tools/make_records.py --dataset=mnist --output_dir={tmp_path / 'records'}" \
      in message


def test_records_another_worker_prepared_meanwhile_are_used(tmp_path, monkeypatch, capsys):
  # Every worker of a cluster finds the records missing and prepares them;
  # the ones whose copy lands second get a DataError and read the winner's.
  source = tfx.write_idx_dir(tmp_path / "idx")
  records_dir = tmp_path / "records"
  config = tfx.train_config(tmp_path / "run", records_dir, source_dir=str(source))
  real = prepare.make_records

  def lose_the_race(prepare_config):
    real(prepare_config)  # The other worker's copy.
    raise DataError(f"{records_dir}/mnist: another process wrote it meanwhile; kept that one")

  monkeypatch.setattr(prepare, "make_records", lose_the_race)
  info = train_lib.ensure_records(config)
  assert info == records.read_info(str(records_dir), "mnist")
  assert "another process prepared" in capsys.readouterr().out


def test_missing_records_are_prepared_from_idx_source_dir(tmp_path, capsys):
  source = tfx.write_idx_dir(tmp_path / "idx")
  records_dir = tmp_path / "records"
  final = tfx.train_in_process(tmp_path / "run", records_dir, source_dir=source,
                               global_batch_size=60)
  assert "preparing them with make_records from" in capsys.readouterr().out
  info = records.read_info(str(records_dir), "mnist")
  assert info["source"] == "idx"
  assert info["splits"]["train"]["count"] + info["splits"]["validation"]["count"] == \
      tfx.NUM_TRAIN
  assert final["step"] == info["splits"]["train"]["count"] // 60
  assert final["val_count"] == info["splits"]["validation"]["count"]


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
  assert train_lib.current_lr(run) == pytest.approx(1e-9 * 0.5 * 0.25, rel=1e-5)



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
  with train_lib.EmaWeights(run):
    averaged = probabilities()
  np.testing.assert_allclose(served, averaged, atol=1e-5)
  assert np.abs(served - raw).max() > 1e-3  # The EMA is not the raw weights.
  np.testing.assert_array_equal(probabilities(), raw)  # And the raw weights come back.


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_with_finite_loss(tmp_path, records_dir, precision):
  final = tfx.train_in_process(tmp_path / "run", records_dir, precision=precision,
                               epochs=0.5)
  assert final["step"] == 8
  assert np.isfinite(final["val_loss"])
  assert final["val_count"] == 120


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


def test_loops_are_traced_once(tmp_path, records_dir, monkeypatch):
  # Loops of 4, 4, 4 and 3 steps: the count is a tensor, so one trace serves all.
  traced = {}
  for name in ("make_train_loop", "make_eval_fn"):
    make = getattr(train_lib, name)
    monkeypatch.setattr(train_lib, name, lambda *args, make=make, name=name: traced.setdefault(
        name, make(*args)))
  final = tfx.train_in_process(tmp_path / "run", records_dir, epochs=2, steps_per_loop=4)
  assert final["step"] == TOTAL_STEPS
  assert traced["make_train_loop"].experimental_get_tracing_count() == 1
  assert traced["make_eval_fn"].experimental_get_tracing_count() == 1


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
  assert _checkpoint_steps(str(model_dir / "checkpoints")) == [15, 30]
  assert not _checkpoint_steps(str(model_dir / "best"))
  assert not os.path.exists(model_dir / "logs" / "validation")
  assert os.path.exists(model_dir / "export" / "saved_model.pb")
  assert "step 15: checkpoint saved (no validation split)" in capsys.readouterr().out
  with open(model_dir / "manifest.json") as f:
    assert json.load(f)["train_splits"] == ["train", "validation"]
  # A rerun of the finished run trains and evaluates nothing.
  assert tfx.train_in_process(model_dir, records_dir, **fields) == final


@pytest.mark.parametrize("fields, message", [
    (dict(train_splits=("train", "validation")),
     "--validation_split=validation is also in --train_splits; pass --validation_split= to "
     "train without validation"),
    (dict(validation_split="", early_stopping_patience=2),
     "--early_stopping_patience needs a validation split; drop it or pass --validation_split"),
    (dict(validation_split="", early_stopping_patience=2,
          plateau=schedules.PlateauConfig(monitor="val_loss")),
     "--plateau_monitor and --early_stopping_patience need a validation split; drop them or "
     "pass --validation_split"),
    (dict(train_splits=()), "--train_splits is empty; name the splits to train on"),
])
def test_refit_settings_that_cannot_work_are_refused(tmp_path, records_dir, fields, message):
  with pytest.raises(ValueError) as raised:
    tfx.train_in_process(tmp_path / "run", records_dir, **fields)
  assert str(raised.value) == message
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_refit_flags_reach_the_config_and_clash_in_one_line(tmp_path, records_dir):
  args = tfx.train_args(str(tmp_path / "run"), records_dir, "--train_splits=train,validation")
  result = tfx.run(tfx.train_command(args))
  assert result.returncode == 1
  assert _error_lines(result.stderr) == [
      "train: error: --validation_split=validation is also in --train_splits; pass "
      "--validation_split= to train without validation"]
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

# ----------------------------------------------------------------------------
# Distribution, determinism and resumption (background runs)
# ----------------------------------------------------------------------------


def test_one_and_two_replicas_train_the_same_weights(runs):
  runs.result("reference")
  result = runs.result("mirrored")
  assert "Resuming" not in result.stdout
  one, two = _checkpoint(runs, "reference"), _checkpoint(runs, "mirrored")
  assert _step(one) == _step(two) == TOTAL_STEPS
  differences = tfx.max_differences(one, two)
  assert max(differences.values()) < 1e-5, differences
  # The weights moved a lot more than that in the last 10 steps, so the
  # agreement is not vacuous.
  earlier = tfx.checkpoint_values(os.path.join(runs.model_dir("reference"), "checkpoints",
                                               "ckpt-20"))
  moved = tfx.max_differences(one, earlier)
  assert max(moved[name] for name in moved if "kernel" in name) > 1e-3, moved


# One step's rounding: how far the logits of a one-replica and a two-replica
# step may differ, as a fraction of how far the step moved them. See
# test_batchnorm_two_replicas_take_the_step_one_replica_takes.
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
  val = data.read_examples(records.split_files(records_dir, "mnist", "validation"))
  runs, loops, iterators = [], [], []
  for strategy in strategies:
    per_replica = config.global_batch_size // strategy.num_replicas_in_sync
    run = train_lib.create_run(config, strategy, info, val.image[:per_replica], TOTAL_STEPS,
                               STEPS_PER_EPOCH)
    dataset, _ = data.distribute_train(strategy, files, counts, config.global_batch_size,
                                       config.seed, 0, config.sharding)
    runs.append(run)
    loops.append(train_lib.make_train_loop(config, run, per_replica))
    iterators.append(iter(dataset))
  for layer in runs[1].model.stack:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = synchronized
  images = data.normalize(val.image)

  def state(run):
    return list(run.model.variables) + list(run.optimizer.variables)

  def logits_with(values):
    for variable, value in zip(state(runs[0]), values):
      variable.assign(value)
    return runs[0].model(images, training=False).numpy().astype(np.float64)

  ratios = []
  for _ in range(TOTAL_STEPS):
    for mine, theirs in zip(state(runs[1]), state(runs[0])):
      mine.assign(theirs.numpy())
    before = logits_with([v.numpy() for v in state(runs[0])])
    for loop, iterator in zip(loops, iterators):
      loop(iterator, tf.constant(1))
    one = [v.numpy() for v in state(runs[0])]
    two = logits_with([v.numpy() for v in state(runs[1])])
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


def test_deterministic_runs_are_bit_identical(runs):
  runs.result("reference")
  runs.result("twin")
  tfx.assert_identical(_checkpoint(runs, "reference"), _checkpoint(runs, "twin"))


def test_resumed_run_equals_an_uninterrupted_run(runs):
  runs.result("reference")
  first, second = runs.result("resume")
  assert f"done: step {STEPS_PER_EPOCH}" in first.stdout
  assert f"at step {STEPS_PER_EPOCH} of {TOTAL_STEPS}" in second.stdout
  assert _metrics(runs.model_dir("resume"))["step"] == TOTAL_STEPS
  tfx.assert_identical(_checkpoint(runs, "reference"), _checkpoint(runs, "resume"))


def test_sigkill_then_rerun_equals_an_uninterrupted_run(runs):
  runs.result("reference")
  killed, saved, rerun = runs.result("sigkill")
  assert killed.returncode == -signal.SIGKILL, tfx.describe(killed)
  assert saved and max(saved) < TOTAL_STEPS, saved
  assert all(step == value for step, value in saved.items()), saved
  assert "Resuming from" in rerun.stdout
  assert _metrics(runs.model_dir("sigkill"))["step"] == TOTAL_STEPS
  tfx.assert_identical(_checkpoint(runs, "reference"), _checkpoint(runs, "sigkill"))


def test_sigterm_checkpoints_and_exits_143(runs):
  runs.result("reference")
  stopped, saved, rerun = runs.result("sigterm")
  assert stopped.returncode == 143, tfx.describe(stopped)
  assert "Traceback" not in stopped.stderr, tfx.describe(stopped)
  match = re.search(r"SIGTERM: saved checkpoint at step (\d+)", stopped.stdout)
  assert match, tfx.describe(stopped)
  step = int(match.group(1))
  assert 0 < step < TOTAL_STEPS
  assert max(saved) == step and saved[step] == step, saved
  assert f"at step {step} of {TOTAL_STEPS}" in rerun.stdout
  assert _metrics(runs.model_dir("sigterm"))["step"] == TOTAL_STEPS
  tfx.assert_identical(_checkpoint(runs, "reference"), _checkpoint(runs, "sigterm"))


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


def test_nonfinite_loss_stops_with_one_line_and_keeps_checkpoints(runs):
  before, result = runs.result("nonfinite")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, tfx.describe(result)
  lines = _error_lines(result.stderr)
  assert len(lines) == 1, tfx.describe(result)
  match = re.match(r"train: error: loss became nan at step (\d+)\b", lines[0])
  assert match, lines[0]
  # Resumed at the end of epoch 2; the first loop of epoch 3 diverges.
  assert TOTAL_STEPS < int(match.group(1)) <= TOTAL_STEPS + 5
  after = _file_states(os.path.join(runs.root, "nonfinite"))
  for folder in ("checkpoints", "best"):
    kept = {k: v for k, v in before.items() if k.startswith(folder + os.sep)}
    assert kept and kept == {k: v for k, v in after.items() if k.startswith(folder + os.sep)}


def test_global_batch_not_divisible_by_replicas_is_one_line(runs):
  result = runs.result("uneven_batch")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, tfx.describe(result)
  assert _error_lines(result.stderr) == [
      "train: error: global batch size 33 does not divide among 2 replicas"], \
      tfx.describe(result)


# ----------------------------------------------------------------------------
# Flags and run files
# ----------------------------------------------------------------------------


def test_flagfile_with_comments_and_later_flags_override(runs):
  parsed = json.loads(runs.result("flagfile").stdout.strip().splitlines()[-1])
  config = parsed["config"]
  assert config["model"] == "lenet5"  # The flagfile overrides the earlier --model.
  assert config["epochs"] == 4  # Set before the flagfile, not overridden by a comment.
  assert config["learning_rate"] == 0.5
  assert config["global_batch_size"] == 16  # The later command-line flag wins.
  assert config["augment"]["rotation_degrees"] == 7
  assert config["model_dir"] == "/tmp/x"
  lines = parsed["flags_text"].splitlines()
  assert "--global_batch_size=16" in lines and "--model=lenet5" in lines
  assert not any(line.startswith("--flagfile") for line in lines)
  # Only --model was set before the flagfile and then by it.
  (warning,) = parsed["warnings"]
  assert warning.startswith("--model=resnet comes before --flagfile=")
  assert warning.endswith(", which sets --model=lenet5; the later one wins (give flags after "
                          "the flagfile to override it)")


def test_a_flag_before_a_flagfile_that_sets_it_is_warned_about(tmp_path, records_dir):
  flagfile = tmp_path / "refit.flags"
  flagfile.write_text("--train_splits=train,validation\n--seed=6\n")
  args = tfx.train_args(str(tmp_path / "run"), records_dir, "--seed=5", f"--flagfile={flagfile}")
  result = tfx.run(tfx.train_command(args))
  assert result.returncode == 1  # The refit clash: nothing trains.
  lines = tfx.clean_stderr(result.stderr).splitlines()
  assert (f"train: warning: --seed=5 comes before --flagfile={flagfile}, which sets --seed=6; "
          "the later one wins (give flags after the flagfile to override it)") in lines
  assert len(_error_lines(result.stderr)) == 1


def test_helpfull_lists_the_flags(runs):
  result = runs.result("helpfull")
  for flag in ("--global_batch_size", "--model_dir", "--rotation_degrees", "--ema_decay",
               "--plateau_monitor", "--[no]deterministic"):
    assert flag in result.stdout, flag
  assert "Images per step summed over all replicas." in result.stdout


def test_run_files_exist(runs):
  runs.result("reference")
  model_dir = runs.model_dir("reference")
  flags_lines = open(os.path.join(model_dir, "flags.txt")).read().splitlines()
  for line in ("--model=mlp", "--global_batch_size=32", "--rotation_degrees=10.0",
               "--deterministic", "--seed=3"):
    assert line in flags_lines, (line, flags_lines)
  with open(os.path.join(model_dir, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["seed"] == 3 and manifest["model"] == "mlp"
  assert manifest["tensorflow"] == tf.__version__
  assert all(shard["sha256"] for shard in manifest["records"]["train"])
  metrics = _metrics(model_dir)
  assert metrics["step"] == TOTAL_STEPS and metrics["epochs"] == 2.0
  assert metrics["val_count"] == 120 and 0.0 <= metrics["val_accuracy"] <= 1.0
  assert os.listdir(os.path.join(model_dir, "best"))


# ----------------------------------------------------------------------------
# TensorBoard
# ----------------------------------------------------------------------------


def test_tensorboard_logs(runs):
  runs.result("reference")
  logs = os.path.join(runs.model_dir("reference"), "logs")

  train = _accumulator(os.path.join(logs, "train"))
  for tag in ("loss", "accuracy", "learning_rate", "images_per_second", "step_seconds"):
    assert _plugin(train, tag) == "scalars", tag
    assert _steps(train, tag) == list(range(5, TOTAL_STEPS + 1, 5)), tag
  rates = [float(tf.make_ndarray(e.tensor_proto)) for e in train.Tensors("learning_rate")]
  assert rates == pytest.approx([1e-3] * 6)
  assert _plugin(train, "augmented_samples") == "images"
  width, height = _image_size(train, "augmented_samples")
  assert width == 8 * 28 and height % 28 == 0

  validation = _accumulator(os.path.join(logs, "validation"))
  for tag in ("loss", "accuracy"):
    assert _plugin(validation, tag) == "scalars"
    assert _steps(validation, tag) == [STEPS_PER_EPOCH, TOTAL_STEPS], tag
  assert _plugin(validation, "mistakes") == "images"

  run = _accumulator(logs)
  assert _plugin(run, "flags") == "text"
  flags_text = tf.make_ndarray(run.Tensors("flags")[0].tensor_proto).item().decode()
  assert "--model=mlp" in flags_text and "--global_batch_size=32" in flags_text
  hparams_tags = [tag for tag in run.Tags()["tensors"] if _plugin(run, tag) == "hparams"]
  assert hparams_tags, run.Tags()
  content = run.PluginTagToContent("hparams")["_hparams_/session_start_info"]
  start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
  assert start.hparams["model"].string_value == "mlp"
  assert start.hparams["global_batch_size"].number_value == 32
  assert start.hparams["augment"].bool_value
  assert _steps(run, "final/val_accuracy") == [TOTAL_STEPS]


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
  with train_lib.EmaWeights(run):
    swapped = [v.numpy() for v in run.model.variables]
  for value, average in zip(swapped, averages):
    np.testing.assert_array_equal(value, average)
  index = [i for i, v in enumerate(run.model.variables) if "moving_mean" in v.name][0]
  assert np.abs(averages[index] - raw[index]).max() > 0  # Statistics are averaged too.
  for value, before in zip([v.numpy() for v in run.model.variables], raw):
    np.testing.assert_array_equal(value, before)  # And the raw ones come back.


def test_weight_average_update_formula():
  variable = tf.Variable([1.0, 2.0])
  average = optim.WeightAverage([variable], decay=0.75)
  variable.assign([5.0, 6.0])
  average.update([variable])
  np.testing.assert_allclose(average.averages[0].numpy(), [2.0, 3.0])


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
    setup = train_lib._set_up(config)  # pylint: disable=protected-access
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


def test_shipped_flagfiles_parse_and_build_their_models():
  """Every flagfile at the repository root gives a config whose model builds."""
  code = ("import json, sys\n"
          "import numpy as np\n"
          "from absl import flags\n"
          "from tfmnist import datasets, models, train\n"
          "out = {}\n"
          "for path in sys.argv[1:]:\n"
          "  flags.FLAGS.unparse_flags()\n"
          "  flags.FLAGS(['train', f'--flagfile={path}'])\n"
          "  config = train.config_from_flags()\n"
          "  model = models.create(config.model, datasets.get_spec(config.dataset).num_classes)\n"
          "  model(np.zeros((1, 28, 28, 1), np.float32))\n"
          "  out[path] = {'model_dir': config.model_dir, 'dataset': config.dataset,\n"
          "               'model': config.model, 'params': model.count_params()}\n"
          "print(json.dumps(out))\n")
  paths = sorted(str(p) for p in tfx.REPO_ROOT.glob("*.flags"))
  assert {os.path.basename(p) for p in paths} >= {
      "lenet.flags", "kaggle.flags", "lenet5.flags", "fashion.flags", "kannada.flags",
      "best.flags", "fast.flags", "fast995.flags"}
  result = tfx.check(tfx.run([tfx.PYTHON, "-c", code, *paths]))
  configs = json.loads(result.stdout.strip().splitlines()[-1])
  for path, config in configs.items():
    name = os.path.basename(path)[:-len(".flags")]
    assert config["model_dir"] == f"runs/{name}", path
    with open(path) as f:
      assert f.readline().startswith("# "), f"{path} does not say what it reproduces"
  by_name = {os.path.basename(p): c for p, c in configs.items()}
  assert by_name["lenet.flags"]["params"] == 1_199_882
  assert by_name["kaggle.flags"]["params"] == 887_530
  assert by_name["fashion.flags"]["dataset"] == "fashion_mnist"
  assert by_name["kannada.flags"]["dataset"] == "kannada_mnist"
