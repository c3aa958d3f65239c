"""Tests of the commands' start: flags parsed before TensorFlow loads, its C++ logs kept quiet."""

import dataclasses
import os
import subprocess
import time

import pytest

import train_fixtures as tfx
from tfmnist.cli import augment_flags, startup
from tfmnist.data import augment

_LOG_ENV = (startup.LEVEL_ENV, startup.SHOW_LOGS_ENV)


def _command(args, timeout=300, **extra):
  """Runs `args` with the commands' own logging defaults; returns (result, seconds)."""
  env = tfx.subprocess_env(**extra)
  for name in _LOG_ENV:  # Another test module may have set them for its own commands.
    if name not in extra:
      env.pop(name, None)
  start = time.perf_counter()
  result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          cwd=str(tfx.REPO_ROOT), env=env)
  return result, time.perf_counter() - start


_COMMANDS = ["train", "evaluate", "predict", "convert", "serve"]


@pytest.mark.parametrize("command", _COMMANDS)
def test_the_flags_of_a_command_load_without_tensorflow(command):
  code = (f"import sys\nimport tfmnist.cli.{command}\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
  result, _ = _command([tfx.PYTHON, "-c", code])
  assert result.returncode == 0, tfx.describe(result)
  assert result.stdout.strip() == "[]"


def test_a_mistyped_flag_fails_at_once():
  """absl's error before TensorFlow loads: 0.1-0.2 s on the 2-core Intel Xeon @ 2.80GHz,
  6.6 s when TensorFlow loaded first; 3 s leaves room for a busy machine."""
  result, seconds = _command([tfx.PYTHON, "-m", "tfmnist.train", "--model_dir=/nowhere",
                              "--epochz=3"])
  assert result.returncode == 1
  assert ("FATAL Flags parsing error: Unknown command line flag 'epochz'. Did you mean: "
          "epochs ?") in result.stderr.splitlines()
  assert seconds < 3, f"{seconds:.1f} s"


@pytest.mark.parametrize("command", ["evaluate", "convert", "serve"])
def test_a_missing_run_folder_is_one_line_before_tensorflow_loads(command, tmp_path):
  """Under a second here (2-core Intel Xeon @ 2.80GHz); loading TensorFlow alone takes 6 s."""
  missing = tmp_path / "no_run"
  result, seconds = _command([tfx.PYTHON, "-m", f"tfmnist.{command}", f"--model_dir={missing}"])
  assert result.returncode == 1, tfx.describe(result)
  assert result.stderr.strip().splitlines() == [f"{command}: error: {missing}: no such run folder"]
  assert seconds < 3, f"{seconds:.1f} s"
  assert not missing.exists()


@pytest.mark.parametrize("command", _COMMANDS)
def test_a_stray_argument_is_refused_before_tensorflow_loads(command, tmp_path):
  args = [tfx.PYTHON, "-m", f"tfmnist.{command}", f"--model_dir={tmp_path}", "stray"]
  if command == "predict":
    args.append(f"--input={tmp_path}")
  result, seconds = _command(args)
  assert result.returncode == 1, tfx.describe(result)
  assert "unexpected arguments: stray" in result.stderr
  assert seconds < 3, f"{seconds:.1f} s"


@pytest.mark.slow
def test_a_command_that_runs_a_model_prints_no_tensorflow_start_up_lines(tmp_path_factory):
  """No oneDNN, CUDA driver or `failed call to cuInit` lines (the last one is printed at
  TF_CPP_MIN_LOG_LEVEL=2 on a machine without a GPU); the command's own lines stay."""
  records_dir, run_dir = tfx.shared_run(tmp_path_factory)
  result, _ = _command([tfx.PYTHON, "-m", "tfmnist.predict", f"--model_dir={run_dir}",
                        f"--input={os.path.join(records_dir, 'mnist')}", "--noprogress"])
  assert result.returncode == 0, tfx.describe(result)
  assert result.stderr.startswith(f"{tfx.NUM_TEST} predictions from 1 model(s); "), \
      result.stderr
  assert len(result.stderr.splitlines()) == 1, result.stderr
  assert "cuInit" not in result.stderr


def test_quiet_logs_unless_asked_for(monkeypatch):
  for name in _LOG_ENV:
    monkeypatch.delenv(name, raising=False)
  assert startup.quiet_logs() and os.environ[startup.LEVEL_ENV] == "3"
  monkeypatch.setenv(startup.LEVEL_ENV, "1")  # The user's own level.
  assert not startup.quiet_logs() and os.environ[startup.LEVEL_ENV] == "1"
  monkeypatch.delenv(startup.LEVEL_ENV)
  monkeypatch.setenv(startup.SHOW_LOGS_ENV, "1")
  assert not startup.quiet_logs() and startup.LEVEL_ENV not in os.environ


def test_without_log_lines_keeps_all_but_cpp_log_lines(capfd):
  lines = [
      b"WARNING: All log messages before absl::InitializeLog() is called are written to "
      b"STDERR\n",
      b"I0000 00:00:1796140515.500994    9017 port.cc:153] oneDNN custom operations are on.\n",
      b"E0000 00:00:1796140520.366673    9017 cuda_platform.cc:52] failed call to cuInit: "
      b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
      b"W1201 15:50:52.580384 139633295788928 checkpoints.py:77] a warning\n",
      b"F0000 00:00:1796140520.366673    9017 check.cc:1] a fatal error\n",
      b"a line of another kind\n"]
  with startup.without_log_lines():
    for line in lines:
      os.write(2, line)
  assert capfd.readouterr().err == (
      "F0000 00:00:1796140520.366673    9017 check.cc:1] a fatal error\n"
      "a line of another kind\n")


def test_augment_flag_defaults_are_augment_configs():
  """augment_flags writes out the defaults that are not "off" (it loads without TensorFlow)."""
  for field in dataclasses.fields(augment.AugmentConfig):
    if field.name in augment_flags.DEFAULTS:
      assert augment_flags.DEFAULTS[field.name] == field.default, field.name
    else:
      assert not field.default, f"{field.name}: add its default to augment_flags.DEFAULTS"
