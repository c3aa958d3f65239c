"""Tests of tfmnist.hardware: the precision `--precision=auto` chooses, the CPU's name, and its kernels."""

import os
import subprocess
import sys

import pytest

from tfmnist import hardware

EPYC_BF16 = frozenset("fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16".split())
XEON_AVX512 = frozenset("fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni".split())
EPYC_AVX2 = frozenset("fpu sse2 avx avx2 fma".split())
SAPPHIRE_RAPIDS = frozenset("avx2 avx512f avx512_bf16 amx_bf16 amx_tile".split())


def _cpu(flags, name="Test CPU", **env):
  return hardware.Machine(cpu=name, cpu_flags=flags, env=tuple(env.items()))


@pytest.mark.parametrize("flags,policy,says", [
    (EPYC_BF16, "mixed_bfloat16", "has AVX-512 BF16"),
    (SAPPHIRE_RAPIDS, "mixed_bfloat16", "has AMX"),
    (XEON_AVX512, "float32", "no AVX-512 BF16 or AMX"),
    (EPYC_AVX2, "float32", "no AVX-512 BF16 or AMX"),
    (frozenset(), "float32", "no AVX-512 BF16 or AMX"),  # Not x86, or no /proc/cpuinfo.
])
def test_cpus_get_bfloat16_only_with_native_instructions(flags, policy, says):
  chosen, reason = hardware.choose_precision(_cpu(flags))
  assert chosen == policy
  assert says in reason and "Test CPU" in reason


@pytest.mark.parametrize("env,says", [
    ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "TF_ENABLE_ONEDNN_OPTS=0"),
    ({"ONEDNN_MAX_CPU_ISA": "avx2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "ONEDNN_MAX_CPU_ISA=AVX512_CORE"),
])
def test_settings_that_keep_onednn_from_bfloat16_choose_float32(env, says):
  chosen, reason = hardware.choose_precision(_cpu(EPYC_BF16, **env))
  assert chosen == "float32" and says in reason


@pytest.mark.parametrize("isa", ["AVX512_CORE_BF16", "AVX512_CORE_AMX", "DEFAULT"])
def test_onednn_isa_limits_that_keep_bfloat16_keep_it(isa):
  assert hardware.choose_precision(_cpu(EPYC_BF16, ONEDNN_MAX_CPU_ISA=isa))[0] == "mixed_bfloat16"


@pytest.mark.parametrize("flags,env,conflict", [
    (EPYC_BF16, {"ONEDNN_MAX_CPU_ISA": "avx2"}, True),
    (XEON_AVX512, {"ONEDNN_MAX_CPU_ISA": "AVX2_VNNI"}, True),
    (EPYC_BF16, {"ONEDNN_MAX_CPU_ISA": "SSE41"}, True),
    # oneDNN keeps its bfloat16 convolutions (native or emulated) from AVX512_CORE up.
    (EPYC_BF16, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False),
    (EPYC_BF16, {}, False),
    # Without oneDNN, or without AVX-512, TensorFlow's own kernels compute bfloat16.
    (EPYC_BF16, {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}, False),
    (EPYC_AVX2, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
])
def test_bfloat16_conflicts_only_where_onednn_is_capped_below_avx512(flags, env, conflict):
  said = hardware.bfloat16_conflict(_cpu(flags, **env))
  assert bool(said) == conflict
  if conflict:
    assert f"ONEDNN_MAX_CPU_ISA={env['ONEDNN_MAX_CPU_ISA'].upper()}" in said and "Test CPU" in said


def test_gpus_have_no_bfloat16_conflict():
  machine = hardware.Machine(cpu="Test CPU", cpu_flags=EPYC_BF16, gpus=(("NVIDIA H200", (9, 0)),),
                             env=(("ONEDNN_MAX_CPU_ISA", "AVX2"),))
  assert hardware.bfloat16_conflict(machine) == ""


@pytest.mark.parametrize("gpus,policy", [
    ((("NVIDIA H200", (9, 0)),), "mixed_bfloat16"),
    ((("NVIDIA A100", (8, 0)),), "mixed_bfloat16"),
    ((("Tesla T4", (7, 5)),), "mixed_float16"),
    ((("Tesla P100", (6, 0)),), "float32"),
    # Mixed GPUs: the oldest decides, since every replica runs the same policy.
    ((("NVIDIA A100", (8, 0)), ("Tesla V100", (7, 0))), "mixed_float16"),
])
def test_gpus_by_compute_capability(gpus, policy):
  machine = hardware.Machine(cpu="Test CPU", cpu_flags=EPYC_AVX2, gpus=gpus)
  chosen, reason = hardware.choose_precision(machine)
  assert chosen == policy
  assert min(gpus, key=lambda g: g[1])[0] in reason


def test_tpus_train_in_bfloat16():
  machine = hardware.Machine(cpu="Test CPU", cpu_flags=EPYC_AVX2, tpu=True)
  assert hardware.choose_precision(machine)[0] == "mixed_bfloat16"


def test_this_cpu_is_read_from_proc_cpuinfo():
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
  except OSError:
    pytest.skip("no /proc/cpuinfo here")
  flags = set(next(line for line in text.splitlines() if line.startswith("flags"))
              .split(":", 1)[1].split())
  assert hardware.cpu_flags() == flags
  described = hardware.describe_cpu()
  assert described["model"] in text
  assert (described["bf16"] != "none") == bool({"avx512_bf16", "amx_bf16"} & flags)
  assert (hardware.choose_precision(hardware.detect())[0] == "mixed_bfloat16") == (
      described["bf16"] != "none")


def test_cpu_label_says_whether_bfloat16_is_native():
  assert hardware.cpu_label(EPYC_BF16).endswith("(AVX-512, with native bfloat16)")
  assert hardware.cpu_label(EPYC_AVX2).endswith("(AVX2, without native bfloat16)")


@pytest.mark.parametrize("preset,expected", [(None, "1"), ("0", "0"), ("1", "1")])
def test_importing_tfmnist_turns_on_onednn_unless_the_user_chose(monkeypatch, preset, expected):
  import importlib  # pylint: disable=g-import-not-at-top
  import tfmnist  # pylint: disable=g-import-not-at-top
  if preset is None:
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
  else:
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", preset)
  importlib.reload(tfmnist)
  assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == expected


@pytest.mark.slow
@pytest.mark.parametrize("preset,on", [(None, True), ("0", False)])
def test_tensorflow_loaded_after_tfmnist_runs_onednn_kernels(preset, on):
  # TensorFlow logs this line at start-up when its oneDNN kernels are on; on
  # an AVX2-only CPU it leaves them off unless tfmnist asked for them.
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "TFMNIST_TF_LOGS")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "0"
  if preset is not None:
    env["TF_ENABLE_ONEDNN_OPTS"] = preset
  result = subprocess.run(
      [sys.executable, "-c", "import tfmnist, tensorflow as tf; tf.constant(1.0) + 1.0"],
      capture_output=True, text=True, timeout=120, env=env, check=True)
  assert ("oneDNN custom operations are on" in result.stderr) == on


@pytest.mark.parametrize("environ,kernels", [
    ({}, "unset"), ({"TF_ENABLE_ONEDNN_OPTS": "1"}, "on"), ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "off"),
    ({"TF_ENABLE_ONEDNN_OPTS": "False"}, "off"), ({"TF_ENABLE_ONEDNN_OPTS": "true"}, "on")])
def test_onednn_kernels_read_the_variable_tensorflow_reads(environ, kernels):
  assert hardware.onednn_kernels(environ) == kernels
