"""Faults of running commands: a worker killed or preempted, a disk that fills up.

The two-worker runs go through tools/launch_local.py and start in the
background when the module's first test does (the slow lane). Faults that
can be staged in process are in tests/training/test_checkpoints.py.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import tensorflow as tf

import train_fixtures as tfx

pytestmark = pytest.mark.slow

LAUNCHER = str(tfx.REPO_ROOT / "tools" / "launch_local.py")
STEPS_PER_EPOCH = 15  # 480 train images / global batch 32.
TOTAL_STEPS = 2 * STEPS_PER_EPOCH
SECONDS_PER_LOOP = 1.0  # Slows the signalled runs so that the signal lands mid-run.
# Checkpoints every loop of 5 steps; the default sharding splits the 2 train
# shards by file between the 2 workers.
CLUSTER_FLAGS = ("--checkpoint_every_steps=5",)
_WORKER_PREFIX = re.compile(r"^\[worker \d+\] ")

# `python -m tfmnist.train` on a disk that fills up while it writes the
# checkpoint of step $FULL_AT_STEP: the files are cut short and the write
# fails with ENOSPC before the checkpoint is listed in the state file, which
# is where TensorFlow's own writer stops on a full disk.
DISK_FULL_PROGRAM = r'''
import errno, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

real_write = tf.train.Checkpoint._write


def write_until_full(self, file_prefix, options=None):
  if not file_prefix.endswith("ckpt-" + os.environ["FULL_AT_STEP"]):
    return real_write(self, file_prefix, options=options)
  real_write(self, file_prefix, options=tf.train.CheckpointOptions())
  data_file = file_prefix + ".data-00000-of-00001"
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 2)
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), data_file)


tf.train.Checkpoint._write = write_until_full
from tfmnist.cli import train
train.run()
'''


def launch_command(train_args, *launcher_flags):
  """Two workers of tests/train_fixtures.py (tfmnist.train with its test hooks)."""
  return [tfx.PYTHON, LAUNCHER, "--workers=2", f"--program={tfx.THIS_FILE}",
          "--grace_seconds=20", *launcher_flags, "--", *train_args]


def clean_output(text):
  """Launcher output without the TensorFlow start-up lines of its workers."""
  return "\n".join(line for line in text.splitlines()
                   if tfx.clean_stderr(_WORKER_PREFIX.sub("", line)))


def describe(result):
  return (f"command {' '.join(map(str, result.args))} exited {result.returncode}\n"
          f"--- stdout\n{clean_output(result.stdout)}\n"
          f"--- stderr\n{clean_output(result.stderr)}")


def latest_step(model_dir):
  """Step of the newest checkpoint in the chief's state file, or 0."""
  try:
    with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as f:
      match = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', f.read(), re.M)
  except FileNotFoundError:
    return 0
  return int(match.group(1)) if match else 0


def step_of(path):
  return int(tfx.checkpoint_values(path)["step/.ATTRIBUTES/VARIABLE_VALUE"])


def metrics(model_dir):
  with open(os.path.join(model_dir, "metrics.json")) as f:
    return json.load(f)


def launch_and_signal(command, log_base, signum, worker, after_step, model_dir, timeout=240):
  """Runs a slowed-down launcher; once the chief has a checkpoint past `after_step`,
  sends `signum` to worker `worker` (None: to the launcher).

  Returns:
    CompletedProcess of the launcher.
  """
  with open(f"{log_base}.out", "w+") as out, open(f"{log_base}.err", "w+") as err:
    process = subprocess.Popen(
        command, stdout=out, stderr=err, text=True, cwd=str(tfx.REPO_ROOT),
        env=tfx.subprocess_env(**{tfx.SECONDS_PER_LOOP_ENV: SECONDS_PER_LOOP}))
    try:
      deadline = time.monotonic() + timeout
      while latest_step(model_dir) <= after_step and process.poll() is None:
        assert time.monotonic() < deadline, f"no checkpoint past step {after_step} in {timeout} s"
        time.sleep(0.02)
      if process.poll() is None:
        if worker is None:
          process.send_signal(signum)
        else:
          with open(f"{log_base}.err") as f:
            pids = re.search(r"worker pids: (.*)", f.read()).group(1)
          os.kill(int(dict(p.split("=") for p in pids.split(", "))[str(worker)]), signum)
      process.wait(timeout=timeout)
    finally:
      if process.poll() is None:  # Timed out: a second Ctrl-C makes it kill its workers.
        for _ in range(2):
          process.send_signal(signal.SIGINT)
          time.sleep(0.5)
        try:
          process.wait(timeout=30)
        except subprocess.TimeoutExpired:
          process.kill()
          process.wait()
    out.seek(0)
    err.seek(0)
    return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())


# ----------------------------------------------------------------------------
# Background runs
# ----------------------------------------------------------------------------


class Runs(tfx.BackgroundRuns):
  """The subprocess runs the tests read; each method is one background job."""

  def args(self, name, *extra):
    return tfx.train_args(self.model_dir(name), self.records_dir, *CLUSTER_FLAGS, *extra)

  def cluster(self):
    """One 2-worker run through three launches: SIGTERM to worker 1 alone, then
    SIGKILL to worker 1 after the next checkpoint, then to the end.

    Returns:
      {"preempted", "killed", "finished": CompletedProcess of each launch,
       "after_preemption", "after_kill": the newest checkpoint step once the
       preempted and the killed job ended, "saved_step": the step variable
       in the checkpoint of the preemption}.
    """
    command = launch_command(self.args("cluster"))
    model_dir, logs = self.model_dir("cluster"), str(self.root / "cluster")
    preempted = launch_and_signal(command, f"{logs}-1", signal.SIGTERM, 1, 0, model_dir)
    # Read now: the later launches' checkpoints replace it.
    after_preemption = latest_step(model_dir)
    saved_step = after_preemption and step_of(
        os.path.join(model_dir, "checkpoints", f"ckpt-{after_preemption}"))
    killed = launch_and_signal(command, f"{logs}-2", signal.SIGKILL, 1,
                               latest_step(model_dir), model_dir)
    after_kill = latest_step(model_dir)
    finished = tfx.run(command, timeout=300)
    return {"preempted": preempted, "after_preemption": after_preemption,
            "saved_step": saved_step, "killed": killed, "after_kill": after_kill,
            "finished": finished}

  def launcher_sigterm(self):
    """SIGTERM to the launcher after the first checkpoint, then the same command again."""
    command = launch_command(self.args("launcher_sigterm"))
    model_dir = self.model_dir("launcher_sigterm")
    stopped = launch_and_signal(command, str(self.root / "launcher_sigterm"), signal.SIGTERM,
                                None, 0, model_dir)
    return stopped, tfx.run(command, timeout=300)

  def disk_full(self):
    """Training whose checkpoint of step 10 hits a full disk."""
    return tfx.run([tfx.PYTHON, "-c", DISK_FULL_PROGRAM, *self.args("disk_full")],
                   FULL_AT_STEP=10)


JOB_ORDER = ("cluster", "disk_full", "launcher_sigterm")
NEEDS = {
    "test_sigterm_to_one_worker_stops_every_worker_at_the_same_step": ("cluster",),
    "test_sigkill_of_a_worker_stops_the_job_with_a_clear_message": ("cluster",),
    "test_relaunch_after_the_kill_resumes_and_finishes": ("cluster",),
    "test_sigterm_to_the_launcher_checkpoints_and_resumes": ("launcher_sigterm",),
    "test_disk_full_while_checkpointing_stops_with_one_line_and_resumes": ("disk_full",),
}


runs = tfx.runs_fixture(Runs, "faults", JOB_ORDER, NEEDS)


def test_disk_full_while_checkpointing_stops_with_one_line_and_resumes(runs, records_dir,
                                                                      capsys):
  full = runs.result("disk_full")
  model_dir = runs.model_dir("disk_full")
  folder = os.path.join(model_dir, "checkpoints")
  assert full.returncode == 1, tfx.describe(full)
  assert "Traceback" not in full.stderr, tfx.describe(full)
  errors = [line for line in full.stderr.splitlines() if line.startswith("train: error:")]
  assert errors == [
      f"train: error: could not write checkpoint {folder}/ckpt-10 (No space left on device); "
      f"the last good checkpoint is {folder}/ckpt-5, which a rerun resumes from"], \
      tfx.describe(full)
  latest = tf.train.latest_checkpoint(folder)
  assert latest == os.path.join(folder, "ckpt-5") and step_of(latest) == 5
  # The same run again (in this process, without the full disk) resumes there.
  final = tfx.train_in_process(model_dir, records_dir, epochs=2, checkpoint_every_steps=5)
  assert f"Resuming from {folder}/ckpt-5 at step 5 of {TOTAL_STEPS}." in capsys.readouterr().out
  assert final["step"] == metrics(model_dir)["step"] == TOTAL_STEPS
  assert step_of(folder) == TOTAL_STEPS


# ----------------------------------------------------------------------------
# Two workers: preemption, a killed worker, resumption
# ----------------------------------------------------------------------------


def test_sigterm_to_one_worker_stops_every_worker_at_the_same_step(runs):
  cluster = runs.result("cluster")
  preempted = cluster["preempted"]
  assert preempted.returncode == 143, describe(preempted)
  assert "Traceback" not in preempted.stderr, describe(preempted)
  # Either may end first; both end by themselves, without a signal from the launcher.
  assert re.search(r"launch_local: worker \d was preempted \(exit 143\); waiting up to 20 s "
                   "for the others to stop with it", preempted.stderr), describe(preempted)
  # Worker 1 got the signal; the chief learned it at the same loop boundary
  # and saved the checkpoint of the same step.
  signalled = re.search(r"^\[worker 1\] SIGTERM: saved checkpoint at step (\d+)",
                        preempted.stdout, re.M)
  told = re.search(r"^\[worker 0\] SIGTERM on another worker: saved checkpoint at step (\d+)",
                   preempted.stdout, re.M)
  assert signalled and told, describe(preempted)
  step = int(told.group(1))
  assert int(signalled.group(1)) == step and 0 < step < TOTAL_STEPS
  assert cluster["after_preemption"] == cluster["saved_step"] == step
  assert "the workers checkpointed and stopped" in preempted.stderr


def test_sigkill_of_a_worker_stops_the_job_with_a_clear_message(runs):
  cluster = runs.result("cluster")
  killed = cluster["killed"]
  assert killed.returncode == 1, describe(killed)
  assert "launch_local: worker 1 was killed by SIGKILL; stopping the other workers" \
      in killed.stderr, describe(killed)
  assert re.search(r"launch_local: job failed: worker 1 was killed by SIGKILL; then worker 0 "
                   r"(exited with status \d+|was killed by SIG\w+); rerun the same command",
                   killed.stderr), describe(killed)
  # This launch had resumed from the checkpoint of the preemption.
  step = int(re.search(r"saved checkpoint at step (\d+)", cluster["preempted"].stdout).group(1))
  assert "[worker 0] Resuming from " in killed.stdout
  assert f"at step {step} of {TOTAL_STEPS}." in killed.stdout, describe(killed)
  assert step < cluster["after_kill"] < TOTAL_STEPS


def test_relaunch_after_the_kill_resumes_and_finishes(runs):
  cluster = runs.result("cluster")
  finished, step = cluster["finished"], cluster["after_kill"]
  assert finished.returncode == 0, describe(finished)
  model_dir = runs.model_dir("cluster")
  folder = os.path.join(model_dir, "checkpoints")
  for index in range(2):
    assert (f"[worker {index}] Resuming from {folder}/ckpt-{step} at step {step} of "
            f"{TOTAL_STEPS}.") in finished.stdout, describe(finished)
    assert f"[worker {index}] done: step {TOTAL_STEPS}," in finished.stdout
  assert metrics(model_dir)["step"] == TOTAL_STEPS
  assert step_of(folder) == TOTAL_STEPS
  assert not os.path.exists(os.path.join(model_dir, ".workers"))


def test_sigterm_to_the_launcher_checkpoints_and_resumes(runs):
  stopped, rerun = runs.result("launcher_sigterm")
  assert stopped.returncode == 143, describe(stopped)
  assert "launch_local: SIGTERM: sent SIGTERM to the workers" in stopped.stderr
  steps = {int(m.group(2)) for m in re.finditer(
      r"^\[worker (\d)\] SIGTERM(?: on another worker)?: saved checkpoint at step (\d+)",
      stopped.stdout, re.M)}
  assert len(steps) == 1, describe(stopped)
  step = steps.pop()
  assert 0 < step < TOTAL_STEPS
  assert rerun.returncode == 0, describe(rerun)
  assert f"at step {step} of {TOTAL_STEPS}." in rerun.stdout
  assert metrics(runs.model_dir("launcher_sigterm"))["step"] == TOTAL_STEPS


