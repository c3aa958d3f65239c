"""Multi-worker training on this machine: tools/launch_local.py and MultiWorkerMirroredStrategy.

The launcher's own behaviour (TF_CONFIG, output, failures, signals) is tested
with a stand-in worker program that starts in a fraction of a second; the
training runs (2 worker processes each) start in the background when the
module's first test does.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import time

import pytest

import train_fixtures as tfx

pytestmark = pytest.mark.slow  # Every test here starts processes.

LAUNCHER = str(tfx.REPO_ROOT / "tools" / "launch_local.py")
# 480 train images / global batch 16 = 30 steps per epoch; 8 epochs = 240 steps.
GLOBAL_BATCH = 16
STEPS_PER_EPOCH = 480 // GLOBAL_BATCH
EPOCHS = 8
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH
# Both runs see the same global batches: sharding by data gives every worker
# its rows of each batch, as the two virtual devices of one process get theirs.
COMPARE_FLAGS = (f"--epochs={EPOCHS}", f"--global_batch_size={GLOBAL_BATCH}",
                 f"--steps_per_loop={STEPS_PER_EPOCH}", "--sharding=data", "--seed=5",
                 "--rotation_degrees=10", "--shift_x=0.1")
_WORKER_PREFIX = re.compile(r"^\[worker \d+\] ")


def launch_command(train_args, *launcher_flags, workers=2):
  """`python tools/launch_local.py --workers=N <launcher flags> -- <train flags>`."""
  return [tfx.PYTHON, LAUNCHER, f"--workers={workers}", *launcher_flags, "--", *train_args]


def clean_output(text):
  """Launcher output without the TensorFlow start-up lines of its workers."""
  return "\n".join(line for line in text.splitlines()
                   if tfx.clean_stderr(_WORKER_PREFIX.sub("", line)))


def describe(result):
  return (f"command {' '.join(map(str, result.args))} exited {result.returncode}\n"
          f"--- stdout\n{clean_output(result.stdout)}\n"
          f"--- stderr\n{clean_output(result.stderr)}")


def _load_launcher():
  spec = importlib.util.spec_from_file_location("launch_local", LAUNCHER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


launch_local = _load_launcher()


# ----------------------------------------------------------------------------
# Background training runs
# ----------------------------------------------------------------------------


class Runs(tfx.BackgroundRuns):
  """The training runs the tests read; each method is one background job."""

  def two_workers(self):
    args = tfx.train_args(self.model_dir("two_workers"), self.records_dir, *COMPARE_FLAGS,
                          "--export")
    return tfx.run(launch_command(args, "--grace_seconds=5"), timeout=600)

  def two_devices(self):
    args = tfx.train_args(self.model_dir("two_devices"), self.records_dir, *COMPARE_FLAGS,
                          "--strategy=mirrored", "--num_virtual_devices=2")
    return tfx.check(tfx.run(tfx.train_command(args), timeout=600))

  def uneven_batch(self):
    args = tfx.train_args(self.model_dir("uneven_batch"), self.records_dir,
                          "--global_batch_size=33")
    return tfx.run(launch_command(args, "--grace_seconds=5"))


JOB_ORDER = ("two_workers", "two_devices", "uneven_batch")
NEEDS = {
    "test_two_workers_train_the_same_weights_as_two_virtual_devices": (
        "two_workers", "two_devices"),
    "test_only_the_chief_writes_the_run_files": ("two_workers",),
    "test_global_batch_not_divisible_among_workers_is_refused": ("uneven_batch",),
}


runs = tfx.runs_fixture(Runs, "multi_worker", JOB_ORDER, NEEDS)


# ----------------------------------------------------------------------------
# The launcher, with a stand-in worker program
# ----------------------------------------------------------------------------

# Prints its TF_CONFIG and arguments, then behaves as $FAKE_WORKER_<index> says:
# "ok" exits 0 at once, "exit:N:S" exits N after S seconds (when the other
# workers are up), "sleep" waits, "stubborn" waits and ignores SIGTERM. SIGTERM
# otherwise makes it print "got SIGTERM" and exit 143, as tfmnist.train does.
FAKE_WORKER = r'''
import json, os, signal, sys, time
config = json.loads(os.environ["TF_CONFIG"])
index = config["task"]["index"]
role = os.environ.get("FAKE_WORKER_%d" % index, "ok")


def on_term(signum, frame):
  print("got SIGTERM", flush=True)
  sys.exit(143)


signal.signal(signal.SIGTERM, signal.SIG_IGN if role == "stubborn" else on_term)
print("config " + json.dumps(config), flush=True)
print("args " + json.dumps(sys.argv[1:]), flush=True)
print("to stderr", file=sys.stderr, flush=True)
if role.startswith("exit:"):
  _, code, seconds = role.split(":")
  time.sleep(float(seconds))
  sys.exit(int(code))
if role in ("sleep", "stubborn"):
  print("ready", flush=True)
  time.sleep(60)
'''


@pytest.fixture
def fake_worker(tmp_path):
  path = tmp_path / "fake_worker.py"
  path.write_text(FAKE_WORKER)
  return str(path)


def _lines(text, index):
  prefix = f"[worker {index}] "
  return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def test_with_strategy_adds_multi_worker_and_refuses_another():
  assert launch_local.with_strategy(["--model_dir=x"]) == [
      "--model_dir=x", "--strategy=multi_worker"]
  for given in (["--strategy=multi_worker"], ["--strategy", "multi_worker"]):
    assert launch_local.with_strategy(["--model_dir=x", *given]) == ["--model_dir=x", *given]
  for given in (["--strategy=mirrored"], ["--strategy", "default"]):
    with pytest.raises(launch_local.app.UsageError, match="need --strategy=multi_worker"):
      launch_local.with_strategy(["--model_dir=x", *given])


def test_workers_get_their_tf_config_flags_and_prefixed_output(fake_worker):
  result = tfx.run(launch_command(["--model_dir=/tmp/x", "--epochs=1"],
                                  f"--program={fake_worker}", workers=3), timeout=60)
  assert result.returncode == 0, describe(result)
  configs = [json.loads(_lines(result.stdout, i)[0].removeprefix("config ")) for i in range(3)]
  cluster = configs[0]["cluster"]
  assert list(cluster) == ["worker"] and len(cluster["worker"]) == 3
  assert len(set(cluster["worker"])) == 3
  assert all(address.startswith("127.0.0.1:") for address in cluster["worker"])
  for index, config in enumerate(configs):
    assert config == {"cluster": cluster, "task": {"type": "worker", "index": index}}
    args = json.loads(_lines(result.stdout, index)[1].removeprefix("args "))
    assert args == ["--model_dir=/tmp/x", "--epochs=1", "--strategy=multi_worker"]
    assert _lines(result.stderr, index) == ["to stderr"]
  assert "launch_local: all workers finished" in result.stderr


def test_a_failed_worker_stops_the_others_and_is_named(fake_worker):
  start = time.monotonic()
  result = tfx.run(launch_command(["--model_dir=/tmp/x"], f"--program={fake_worker}",
                                  "--grace_seconds=1"),
                   timeout=60, FAKE_WORKER_0="stubborn", FAKE_WORKER_1="exit:3:1")
  assert result.returncode == 1, describe(result)
  assert "launch_local: worker 1 exited with status 3; stopping the other workers" \
      in result.stderr
  assert "launch_local: killing worker 0 after 1 s" in result.stderr
  assert ("launch_local: job failed: worker 1 exited with status 3; then worker 0 was "
          "killed by SIGKILL") in result.stderr, describe(result)
  assert time.monotonic() - start < 30


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_ctrl_c_to_the_launcher_reaches_every_worker(fake_worker, signum):
  command = launch_command(["--model_dir=/tmp/x"], f"--program={fake_worker}")
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=str(tfx.REPO_ROOT),
                             env=tfx.subprocess_env(FAKE_WORKER_0="sleep",
                                                    FAKE_WORKER_1="sleep"))
  try:
    ready = 0
    for line in process.stdout:  # Both workers have their SIGTERM handler now.
      ready += line.endswith("] ready\n")
      if ready == 2:
        break
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  assert process.returncode == 143, (stdout, stderr)
  assert stdout.count("got SIGTERM") == 2, stdout
  assert f"launch_local: {signal.Signals(signum).name}: sent SIGTERM to the workers" in stderr
  assert "rerun the same command to resume" in stderr


def test_a_worker_preempted_alone_lets_the_others_stop_by_themselves(fake_worker):
  # The others stop at the same step on their own; a SIGTERM from the
  # launcher could reach them after they put back the default handler.
  result = tfx.run(launch_command(["--model_dir=/tmp/x"], f"--program={fake_worker}"),
                   timeout=60, FAKE_WORKER_0="exit:143:2", FAKE_WORKER_1="exit:143:1")
  assert result.returncode == 143, describe(result)
  assert "launch_local: worker 1 was preempted (exit 143); waiting up to 30 s for the " \
      "others to stop with it" in result.stderr
  assert "got SIGTERM" not in result.stdout
  assert "the workers checkpointed and stopped" in result.stderr


def test_launcher_without_training_flags_is_a_usage_error():
  result = tfx.run([tfx.PYTHON, LAUNCHER, "--workers=2"], timeout=60)
  assert result.returncode != 0
  assert "give the training flags after `--`" in result.stderr


# ----------------------------------------------------------------------------
# Training with two workers
# ----------------------------------------------------------------------------


def _step(values):
  return int(values["step/.ATTRIBUTES/VARIABLE_VALUE"])


def test_two_workers_train_the_same_weights_as_two_virtual_devices(runs):
  workers = runs.result("two_workers")
  assert workers.returncode == 0, describe(workers)
  runs.result("two_devices")
  one = tfx.checkpoint_values(os.path.join(runs.model_dir("two_workers"), "checkpoints"))
  two = tfx.checkpoint_values(os.path.join(runs.model_dir("two_devices"), "checkpoints"))
  assert _step(one) == _step(two) == TOTAL_STEPS
  differences = tfx.max_differences(one, two)
  print(f"largest difference between 2 workers and 2 virtual devices after {TOTAL_STEPS} "
        f"steps: {max(differences.values()):.3g}")
  assert max(differences.values()) < 1e-5, differences
  # The last two epochs moved the weights by far more than the tolerance.
  earlier = tfx.checkpoint_values(os.path.join(
      runs.model_dir("two_workers"), "checkpoints", f"ckpt-{TOTAL_STEPS - 2 * STEPS_PER_EPOCH}"))
  moved = tfx.max_differences(one, earlier)
  assert max(moved[name] for name in moved if "kernel" in name) > 1e-3, moved
  for name in ("two_workers", "two_devices"):
    with open(os.path.join(runs.model_dir(name), "metrics.json")) as f:
      assert json.load(f)["step"] == TOTAL_STEPS


def test_only_the_chief_writes_the_run_files(runs):
  result = runs.result("two_workers")
  assert result.returncode == 0, describe(result)
  model_dir = runs.model_dir("two_workers")
  # The chief's files are all there; the second worker's scratch copies are gone.
  files = set(os.listdir(model_dir))
  assert {"best", "checkpoints", "export", "flags.txt", "logs", "manifest.json",
          "metrics.json"} <= files and ".workers" not in files, sorted(files)
  assert os.path.exists(os.path.join(model_dir, "export", "saved_model.pb"))
  assert "--strategy=multi_worker" in open(os.path.join(model_dir, "flags.txt")).read()
  # Both workers trained to the end.
  output = clean_output(result.stdout)
  for index in range(2):
    assert f"[worker {index}] done: step {TOTAL_STEPS}," in output, describe(result)
  assert "Traceback" not in result.stderr, describe(result)


@pytest.mark.slow  # The same check as one process with 2 replicas (test_train), 2 more starts.
def test_global_batch_not_divisible_among_workers_is_refused(runs):
  result = runs.result("uneven_batch")
  assert result.returncode == 1, describe(result)
  assert "Traceback" not in result.stderr, describe(result)
  errors = [line for line in result.stderr.splitlines() if "train: error:" in line]
  assert errors and all(line.endswith(
      "] train: error: global batch size 33 does not divide among 2 replicas")
                        for line in errors), describe(result)
  assert re.search(r"launch_local: job failed: worker \d exited with status 1", result.stderr), \
      describe(result)
