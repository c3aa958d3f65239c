"""What this machine computes natively, and the precision that suits it.

`--precision=auto` asks `choose_precision` for a Keras dtype policy: mixed
bfloat16 only where the hardware multiplies bfloat16 natively, float32
everywhere else. A CPU without bfloat16 instructions converts every bfloat16
value in software: `fast.flags` trained 1.7x slower in mixed bfloat16 than in
float32 on an Intel Xeon with AVX-512 but no AVX-512 BF16, while an AMD EPYC
with AVX-512 BF16 trained it 1.25x faster. The choice is per machine, not
per network: on an Intel Xeon with AMX, networks with a 24-channel
convolution (fast_cnn_lite, fast_cnn4_lite) train slower in mixed bfloat16
than in float32, while those whose channels are multiples of 16 (oneDNN's
bfloat16 block) train as fast or faster. `describe_cpu` also names the CPU next to every timing.
"""

import dataclasses
import os
import platform

# oneDNN's ONEDNN_MAX_CPU_ISA values that include bfloat16 dot products.
_ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
                     "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX",
                     "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT")


# oneDNN's ONEDNN_MAX_CPU_ISA values below AVX-512: they leave it no bfloat16
# convolution at all.
_ONEDNN_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


@dataclasses.dataclass(frozen=True)
class Machine:
  """The facts the precision choice rests on.

  Attributes:
    cpu: the CPU's model name.
    cpu_flags: instruction-set flags as /proc/cpuinfo lists them (x86), empty
      where unknown.
    gpus: (name, (major, minor) compute capability) of each visible GPU.
    tpu: training runs on TPUs.
    env: the environment variables that steer TensorFlow's CPU kernels.
  """
  cpu: str
  cpu_flags: frozenset = frozenset()
  gpus: tuple = ()
  tpu: bool = False
  env: tuple = ()  # (name, value) pairs.

  def getenv(self, name):
    return dict(self.env).get(name, "")


def _cpuinfo_field(field):
  """The first value of `field` in /proc/cpuinfo, or "" where there is none."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == field:
          return value.strip()
  except OSError:
    pass
  return ""


def cpu_model():
  """The CPU's model name (e.g. 'AMD EPYC 9R14 96-Core Processor')."""
  return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags():
  """The CPU's instruction-set flags (x86 Linux), or an empty set."""
  return frozenset(_cpuinfo_field("flags").split())


def bf16_instructions(flags):
  """'AMX', 'AVX-512 BF16' or '' : the CPU's native bfloat16 instructions."""
  if "amx_bf16" in flags:
    return "AMX"
  if "avx512_bf16" in flags:
    return "AVX-512 BF16"
  return ""


def vector_isa(flags):
  """The widest vector instruction set: 'AVX-512', 'AVX2', 'AVX' or ''."""
  for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
    if flag in flags:
      return name
  return ""


def describe_cpu(flags=None):
  """{"model", "vector_isa", "bf16"} of this CPU, for benchmark records."""
  flags = cpu_flags() if flags is None else flags
  return {"model": cpu_model(), "vector_isa": vector_isa(flags),
          "bf16": bf16_instructions(flags) or "none"}


def cpu_label(flags=None):
  """One line naming the CPU and its bfloat16 support, for tables."""
  cpu = describe_cpu(flags)
  bf16 = "with" if cpu["bf16"] != "none" else "without"
  return f"{cpu['model']} ({cpu['vector_isa'] or 'no AVX'}, {bf16} native bfloat16)"


def onednn_kernels(environ=None):
  """'on', 'off' or 'unset': TensorFlow's oneDNN CPU kernels, as TF_ENABLE_ONEDNN_OPTS sets them.

  Importing tfmnist sets the variable to 1 unless it is set, so 'unset' (the
  kernels are what TensorFlow chooses for the CPU) shows only where
  TensorFlow was loaded without tfmnist's package first.
  """
  value = (os.environ if environ is None else environ).get("TF_ENABLE_ONEDNN_OPTS")
  if value is None:
    return "unset"
  return "off" if value.lower() in ("0", "false") else "on"


def detect(strategy=None):
  """The Machine this process runs on (GPUs and TPUs as TensorFlow sees them)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gpus = []
  for device in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(device)
    gpus.append((details.get("device_name", device.name),
                 tuple(details.get("compute_capability", (0, 0)))))
  tpu = strategy is not None and "TPU" in type(strategy).__name__
  env = tuple((name, os.environ[name]) for name in ("ONEDNN_MAX_CPU_ISA",
                                                     "TF_ENABLE_ONEDNN_OPTS")
              if name in os.environ)
  return Machine(cpu=cpu_model(), cpu_flags=cpu_flags(), gpus=tuple(gpus), tpu=tpu, env=env)


def choose_precision(machine):
  """The dtype policy `--precision=auto` trains in on `machine`, and why.

  Returns:
    (policy, reason): policy is "mixed_bfloat16", "mixed_float16" or
    "float32"; reason is one line for the console and manifest.json.
  """
  if machine.tpu:
    return "mixed_bfloat16", "TPUs compute bfloat16 natively"
  if machine.gpus:
    name, capability = min(machine.gpus, key=lambda gpu: gpu[1])
    shown = f"{name} (compute capability {capability[0]}.{capability[1]})"
    if capability >= (8, 0):
      return "mixed_bfloat16", f"{shown} computes bfloat16 natively"
    if capability >= (7, 0):
      return "mixed_float16", f"{shown} has float16 tensor cores but no bfloat16"
    return "float32", f"{shown} has no tensor cores"
  bf16 = bf16_instructions(machine.cpu_flags)
  if not bf16:
    return "float32", (f"{machine.cpu} has no AVX-512 BF16 or AMX, so bfloat16 would be "
                       "converted in software (slower than float32)")
  if onednn_kernels(dict(machine.env)) == "off":
    return "float32", (f"{machine.cpu} has {bf16}, but TF_ENABLE_ONEDNN_OPTS=0 turns off "
                       "the oneDNN kernels that use it")
  isa = machine.getenv("ONEDNN_MAX_CPU_ISA").upper()
  if isa and isa not in _ONEDNN_BF16_ISAS:
    return "float32", (f"{machine.cpu} has {bf16}, but ONEDNN_MAX_CPU_ISA={isa} keeps "
                       "oneDNN from using it")
  return "mixed_bfloat16", f"{machine.cpu} has {bf16}"


def bfloat16_conflict(machine):
  """Why mixed bfloat16 cannot train on `machine`, or "" where it can.

  On a CPU with AVX-512, TensorFlow sends bfloat16 convolutions to oneDNN;
  only on CPUs without it does it fall back to its own (Eigen) kernels. An
  ONEDNN_MAX_CPU_ISA below AVX512_CORE then leaves oneDNN no kernel, and the
  first convolution fails ("could not create a primitive descriptor"), so a
  run that asks for mixed_bfloat16 there is refused before it starts.
  """
  if machine.gpus or machine.tpu or "avx512f" not in machine.cpu_flags:
    return ""
  if onednn_kernels(dict(machine.env)) == "off":
    return ""
  isa = machine.getenv("ONEDNN_MAX_CPU_ISA").upper()
  if isa not in _ONEDNN_BELOW_AVX512:
    return ""
  return (f"ONEDNN_MAX_CPU_ISA={isa} leaves oneDNN no bfloat16 convolution, and TensorFlow "
          f"sends them to oneDNN on {machine.cpu} (AVX-512)")
