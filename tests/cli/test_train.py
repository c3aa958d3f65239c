"""End-to-end tests of `python -m tfmnist.train`: distribution, determinism,
resumption, signals, errors, flags, run files and TensorBoard logs.

Every test here starts the command (the slow lane). The runs start in the
background when the module's first test does (two at a time); the tests that
read a run wait for it. The loop itself is tested in process in
tests/training/test_loop.py.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import time

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import train_fixtures as tfx
from tfmnist import hardware

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 15  # 480 train images / global batch 32.
TOTAL_STEPS = 2 * STEPS_PER_EPOCH
# The reference run: deterministic mlp (dropout 0.2) with augmentation, a
# weight average still in its warmup (so its decay depends on the step), and a
# checkpoint every 5 steps.
REFERENCE_FLAGS = ("--checkpoint_every_steps=5", "--rotation_degrees=10", "--zoom=0.1",
                   "--shift_x=0.1", "--shift_y=0.1", "--ema_decay=0.99", "--seed=3")
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
            "from tfmnist.cli import flagfiles, train\n"
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


def test_deterministic_runs_are_bit_identical(runs):
  runs.result("reference")
  runs.result("twin")
  tfx.assert_identical(_checkpoint(runs, "reference"), _checkpoint(runs, "twin"))


def test_resumed_run_equals_an_uninterrupted_run(runs):
  runs.result("reference")
  first, second = runs.result("resume")
  assert f"done: step {STEPS_PER_EPOCH}" in first.stdout
  assert f"at step {STEPS_PER_EPOCH} of {TOTAL_STEPS}" in second.stdout
  # The last line names where the test score comes from.
  assert re.fullmatch(
      rf"done: step {TOTAL_STEPS}, validation accuracy \d+\.\d\d%; test: python -m "
      rf"tfmnist.evaluate --model_dir={re.escape(runs.model_dir('resume'))}",
      second.stdout.splitlines()[-1]), second.stdout
  assert _metrics(runs.model_dir("resume"))["step"] == TOTAL_STEPS
  resumed = _checkpoint(runs, "resume")
  assert any("weight_average" in name for name in resumed), sorted(resumed)
  tfx.assert_identical(_checkpoint(runs, "reference"), resumed)


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


def test_shipped_flagfiles_parse_and_build_their_models():
  """Every flagfile at the repository root gives a config whose model builds."""
  code = ("import json, sys\n"
          "import numpy as np\n"
          "from absl import flags\n"
          "from tfmnist import models\n"
          "from tfmnist.cli import train\n"
          "from tfmnist.data import catalog as datasets\n"
          "out = {}\n"
          "for path in sys.argv[1:]:\n"
          "  flags.FLAGS.unparse_flags()\n"
          "  flags.FLAGS(['train', f'--flagfile={path}'])\n"
          "  config = train.config_from_flags()\n"
          "  model = models.create(config.model, datasets.get_spec(config.dataset).num_classes)\n"
          "  model(np.zeros((1, 28, 28, 1), np.float32))\n"
          "  out[path] = {'model_dir': config.model_dir, 'dataset': config.dataset,\n"
          "               'model': config.model, 'params': model.count_params(),\n"
          "               'noise': [config.augment.noise_factor,\n"
          "                         config.augment.noise_probability]}\n"
          "print(json.dumps(out))\n")
  paths = sorted(str(p) for p in tfx.REPO_ROOT.glob("*.flags"))
  assert {os.path.basename(p) for p in paths} >= {
      "lenet.flags", "kaggle.flags", "lenet5.flags", "fashion.flags", "kannada.flags",
      "best.flags", "fast.flags", "fast995.flags", "noisy.flags"}
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
  assert by_name["noisy.flags"]["noise"] == [0.5, 0.9]  # The task's noise, on 90% of the images.


@pytest.mark.slow
def test_recomputed_batch_norm_statistics_reach_both_replicas(tmp_path, records_dir):
  """A two-replica run recomputes, validates on both replicas, saves and exports.

  A command of its own: MirroredStrategies made in one process by several tests
  can collide in their collective ops.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfmnist.data import pipeline, records  # pylint: disable=g-import-not-at-top
  from tfmnist.models import batch_norm_statistics  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "run")
  args = tfx.train_args(model_dir, records_dir, *MIRRORED_FLAGS, "--epochs=1", "--export",
                        "--learning_rate=0.003", "--recompute_bn_statistics", model="tiny_bn")
  result = tfx.check(tfx.run(tfx.train_command(args, hooks=True)))
  assert "BatchNorm statistics of 2 layers recomputed over 480 training images" in result.stdout
  tfx.register_tiny_bn()
  run, val = tfx.restore_run(model_dir, records_dir, model="tiny_bn")

  def statistics():
    return [(layer.moving_mean.numpy(), layer.moving_variance.numpy())
            for layer in batch_norm_statistics.batch_norm_layers(run.model)]

  saved = statistics()
  train = pipeline.read_examples(records.split_files(records_dir, "mnist", "train")).image
  batch_norm_statistics.recompute(run.model, train, batch_size=60)
  for (mean, variance), (again_mean, again_variance) in zip(saved, statistics()):
    np.testing.assert_allclose(mean, again_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(variance, again_variance, rtol=1e-6)
  # Each replica validated half of the split, with the recomputed statistics.
  exported = tf.saved_model.load(os.path.join(model_dir, "export"))
  served = exported.signatures["serving_default"](images=val.image)["probabilities"].numpy()
  loss = -np.mean(np.log(served[np.arange(len(served)), val.label.numpy()]))
  with open(os.path.join(model_dir, "metrics.json")) as f:
    assert json.load(f)["val_loss"] == pytest.approx(loss, rel=1e-4)


def test_refit_flags_reach_the_config_and_clash_in_one_line(tmp_path, records_dir):
  args = tfx.train_args(str(tmp_path / "run"), records_dir, "--train_splits=train,validation")
  result = tfx.run(tfx.train_command(args))
  assert result.returncode == 1
  assert _error_lines(result.stderr) == [
      "train: error: validation_split=validation is also in train_splits; pass "
      "--validation_split= (empty) to train without validation"]
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_offline_without_records_names_the_train_flag_that_works(tmp_path):
  """The way out names --source_dir, which train has, not make_records' own flags."""
  mirror = tmp_path / "empty_mirror"  # A download that fails at once, offline.
  mirror.mkdir()
  result = tfx.run([tfx.PYTHON, "-m", "tfmnist.train", "--flagfile=lenet.flags",
                    f"--model_dir={tmp_path / 'run'}", f"--records_dir={tmp_path / 'records'}"],
                   TFMNIST_DOWNLOAD_BASE_URL=mirror.as_uri() + "/")

  assert result.returncode == 1
  lines = _error_lines(result.stderr)
  assert len(lines) == 1, result.stderr
  assert ("without internet, pass --source_dir=DIR to prepare them from local IDX or NPZ "
          "files of mnist") in lines[0]
  assert "--source=" not in lines[0] and "download_base_url" not in lines[0]
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE"])
def test_forced_bfloat16_under_a_onednn_isa_limit_trains_or_says_why(tmp_path, records_dir, isa):
  """Where hardware.bfloat16_conflict says so, the run stops in one line before it writes
  anything (without that check TensorFlow's first convolution fails); everywhere else the
  same command trains, so the check refuses nothing that would work."""
  model_dir = tmp_path / "run"
  args = tfx.train_args(str(model_dir), records_dir, "--precision=mixed_bfloat16",
                        "--epochs=0.5", model="fast_cnn")
  result = tfx.run(tfx.train_command(args), ONEDNN_MAX_CPU_ISA=isa)
  machine = hardware.detect()
  env = dict(machine.env, ONEDNN_MAX_CPU_ISA=isa)
  machine = dataclasses.replace(machine, env=tuple(env.items()))
  if hardware.bfloat16_conflict(machine):
    assert result.returncode == 1, tfx.describe(result)
    (line,) = _error_lines(result.stderr)
    assert line.startswith(f"train: error: precision mixed_bfloat16 (asked for) cannot run "
                           f"here: ONEDNN_MAX_CPU_ISA={isa} ")
    assert "Traceback" not in result.stderr
    assert not model_dir.exists() or not any(model_dir.iterdir())
  else:
    tfx.check(result)
    assert _metrics(model_dir)["step"] > 0
