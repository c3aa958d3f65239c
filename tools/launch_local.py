#!/usr/bin/env python3
r"""Runs a multi-worker training job on this machine: N worker processes on 127.0.0.1.

  python tools/launch_local.py --workers=2 -- --model_dir=/tmp/run --model=mlp --epochs=1

Every worker runs `python -m tfmnist.train` with the flags after `--`, plus
`--strategy=multi_worker` when they name no strategy, and its own TF_CONFIG:

  {"cluster": {"worker": ["127.0.0.1:P0", "127.0.0.1:P1"]},
   "task": {"type": "worker", "index": i}}

Worker 0 is the chief. Output is streamed with a `[worker i]` prefix.

When a worker fails, the others are stopped (SIGTERM, then SIGKILL after
--grace_seconds) and the launcher exits 1 naming the worker and its exit
status. SIGTERM or Ctrl-C to the launcher is passed to every worker as
SIGTERM, which makes them checkpoint the same step and exit 143, and the
launcher exits 143 (a second Ctrl-C kills the workers). SIGTERM to a single
worker (a preempted machine) stops them all the same way. Rerunning the same
command resumes. BUILD.md shows the same job on a real cluster.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

_WORKERS = flags.DEFINE_integer("workers", 2, "Worker processes to start.", lower_bound=1)
_MODULE = flags.DEFINE_string("module", "tfmnist.train",
                              "Python module each worker runs (python -m MODULE).")
_PROGRAM = flags.DEFINE_string("program", "", "Python script each worker runs instead of "
                               "--module (e.g. tests/train_fixtures.py with its test hooks).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address the workers listen on.")
_GRACE = flags.DEFINE_float(
    "grace_seconds", 30.0, "Seconds the workers get after SIGTERM (to checkpoint) before "
    "they are killed.", lower_bound=0.0)

STRATEGY = "multi_worker"
PREEMPTED = 143  # tfmnist.train's exit status after SIGTERM, with a checkpoint saved.
_POLL_SECONDS = 0.1


def free_ports(count, host):
  """`count` distinct ports that nothing listens on at `host` right now."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)  # Held open until all are chosen, so they differ.
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_config(addresses, index):
  """The TF_CONFIG of worker `index` of a cluster of `addresses` (host:port)."""
  return json.dumps({"cluster": {"worker": list(addresses)},
                     "task": {"type": "worker", "index": index}})


def with_strategy(train_args):
  """The training flags with --strategy=multi_worker added when no strategy is given.

  Raises:
    app.UsageError: the flags name another strategy, which would train N
      unrelated copies of the run into the same folder.
  """
  for i, arg in enumerate(train_args):
    if arg == "--":
      break
    if arg.startswith("--strategy=") or arg == "--strategy":
      value = arg.partition("=")[2] if "=" in arg else (
          train_args[i + 1] if i + 1 < len(train_args) else "")
      if value != STRATEGY:
        raise app.UsageError(f"the training flags say --strategy={value}; the workers need "
                             f"--strategy={STRATEGY} (or leave the flag out)")
      return list(train_args)
  return [*train_args, f"--strategy={STRATEGY}"]


def worker_command(train_args):
  """The command line of every worker: this Python running --program or --module."""
  program = [_PROGRAM.value] if _PROGRAM.value else ["-m", _MODULE.value]
  return [sys.executable, *program, *train_args]


def describe_status(returncode):
  """How a process ended, from its Popen.returncode (negative: killed by a signal)."""
  if returncode < 0:
    try:
      name = signal.Signals(-returncode).name
    except ValueError:
      name = f"signal {-returncode}"
    return f"was killed by {name}"
  return f"exited with status {returncode}"


class Output:
  """Copies the workers' output lines to ours, each with a `[worker i]` prefix."""

  def __init__(self):
    self._lock = threading.Lock()
    self._threads = []

  def follow(self, pipe, prefix, stream):
    thread = threading.Thread(target=self._copy, args=(pipe, prefix, stream), daemon=True)
    thread.start()
    self._threads.append(thread)

  def _copy(self, pipe, prefix, stream):
    for raw in iter(pipe.readline, b""):
      line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
      self.write(f"{prefix}{line}", stream)
    pipe.close()

  def write(self, line, stream):
    with self._lock:  # Whole lines only, never two workers' lines mixed.
      stream.write(line + "\n")
      stream.flush()

  def join(self, timeout=5.0):
    for thread in self._threads:
      thread.join(timeout)


class Cluster:
  """The worker processes of one job."""

  def __init__(self, train_args, num_workers, host, grace_seconds):
    self.grace_seconds = grace_seconds
    self.output = Output()
    self.addresses = [f"{host}:{port}" for port in free_ports(num_workers, host)]
    self.command = worker_command(train_args)
    self.processes = []
    self.stop_requested = None  # The signal that asked the launcher to stop.

  def say(self, message):
    self.output.write(f"launch_local: {message}", sys.stderr)

  def start(self):
    self.say(f"starting {len(self.addresses)} workers at {', '.join(self.addresses)} "
             f"(worker 0 is the chief): {' '.join(self.command)}")
    for index in range(len(self.addresses)):
      env = dict(os.environ, TF_CONFIG=tf_config(self.addresses, index), PYTHONUNBUFFERED="1")
      # Its own session keeps a worker out of the terminal's Ctrl-C: the
      # launcher decides what the workers get (SIGTERM, to checkpoint).
      process = subprocess.Popen(self.command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
      self.processes.append(process)
      self.output.follow(process.stdout, f"[worker {index}] ", sys.stdout)
      self.output.follow(process.stderr, f"[worker {index}] ", sys.stderr)
    self.say("worker pids: " + ", ".join(f"{i}={p.pid}" for i, p in enumerate(self.processes)))

  def signal_all(self, signum):
    for process in self.processes:
      if process.poll() is None:
        try:
          process.send_signal(signum)
        except ProcessLookupError:  # Ended between poll and signal.
          pass

  def on_signal(self, signum, frame):
    """SIGTERM or Ctrl-C: SIGTERM to the workers; a second one kills them."""
    del frame
    if self.stop_requested is None:
      self.stop_requested = signal.Signals(signum).name
      self.signal_all(signal.SIGTERM)
    else:
      self.signal_all(signal.SIGKILL)

  def stop(self, sigterm=True):
    """SIGTERM to the workers still running, SIGKILL to those still there after the grace.

    Args:
      sigterm: False when the workers are stopping already: a second SIGTERM
        could land after a worker put back the default handler on its way out.
    """
    if sigterm:
      self.signal_all(signal.SIGTERM)
    deadline = time.monotonic() + self.grace_seconds
    while time.monotonic() < deadline and any(p.poll() is None for p in self.processes):
      time.sleep(_POLL_SECONDS)
    late = [i for i, p in enumerate(self.processes) if p.poll() is None]
    if late:
      self.say(f"killing worker{'s' if len(late) > 1 else ''} "
               f"{', '.join(map(str, late))} after {self.grace_seconds:g} s")
      self.signal_all(signal.SIGKILL)
    for process in self.processes:
      process.wait()

  def wait(self):
    """Waits for the job; returns the launcher's exit status."""
    while True:
      if self.stop_requested:
        self.say(f"{self.stop_requested}: sent SIGTERM to the workers; waiting up to "
                 f"{self.grace_seconds:g} s for them to checkpoint and stop")
        return self._finish(sigterm=False)
      codes = [p.poll() for p in self.processes]
      ended = [i for i, code in enumerate(codes) if code not in (None, 0)]
      if ended:
        # When several ended at once, a signal is the likelier cause: the
        # others then fail in their collectives, or stop together after it.
        first = min(ended, key=lambda i: (codes[i] >= 0, codes[i] == PREEMPTED, i))
        if codes[first] == PREEMPTED:
          # The workers agree on the step to stop at, so the others are
          # checkpointing and stopping by themselves.
          self.say(f"worker {first} was preempted (exit {PREEMPTED}); waiting up to "
                   f"{self.grace_seconds:g} s for the others to stop with it")
          return self._finish(first, sigterm=False)
        self.say(f"worker {first} {describe_status(codes[first])}; stopping the other workers")
        return self._finish(first)
      if all(code == 0 for code in codes):
        self.output.join()
        self.say("all workers finished")
        return 0
      time.sleep(_POLL_SECONDS)

  def _finish(self, first=None, sigterm=True):
    """Stops the workers still running; the launcher's exit status from all of theirs."""
    self.stop(sigterm)
    self.output.join()
    codes = [p.returncode for p in self.processes]
    if all(code == 0 for code in codes):
      self.say("all workers finished")
      return 0
    if all(code in (0, PREEMPTED) for code in codes):
      self.say("the workers checkpointed and stopped; rerun the same command to resume")
      return PREEMPTED
    order = ([first] if first is not None else []) + [
        i for i in range(len(codes)) if i != first]
    statuses = "; then ".join(f"worker {i} {describe_status(codes[i])}" for i in order)
    self.say(f"job failed: {statuses}; rerun the same command to resume from the last "
             "checkpoint")
    return 1


def main(argv):
  if not any(a.startswith(("--model_dir", "--flagfile")) for a in argv[1:]):
    raise app.UsageError("give the training flags after `--`, e.g. "
                         "launch_local.py --workers=2 -- --model_dir=/tmp/run")
  train_args = with_strategy(argv[1:])
  cluster = Cluster(train_args, _WORKERS.value, _HOST.value, _GRACE.value)
  signal.signal(signal.SIGTERM, cluster.on_signal)
  signal.signal(signal.SIGINT, cluster.on_signal)
  try:
    cluster.start()
    status = cluster.wait()
  finally:
    # Whatever happened in here, no worker outlives the launcher.
    cluster.signal_all(signal.SIGKILL)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
