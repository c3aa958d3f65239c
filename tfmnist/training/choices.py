"""The names a run's settings choose from, importable without TensorFlow.

The command lines define their flags with them before TensorFlow loads
(cli/startup.py); the modules that implement each choice import them from
here.
"""

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle")
# The LiteRT files a run's export converts to (serving.litert).
LITERT_VARIANTS = ("float32", "float16", "dynamic_range", "int8")
