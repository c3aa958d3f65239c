"""Tests of tools/time_to_accuracy.py: the first crossing of each target, and its table."""

import time_to_accuracy as tta

RESULT = {"recipe": "fast", "seconds": [5.0, 10.0, 20.0], "accuracy": [0.985, 0.9912, 0.9908],
          "train_seconds": 21.0}


def test_first_crossing_is_the_first_checkpoint_at_or_above_the_target():
  assert tta.first_crossing(RESULT, 0.99) == 10.0
  assert tta.first_crossing(RESULT, 0.985) == 5.0
  assert tta.first_crossing(RESULT, 0.995) is None


def test_markdown_gives_seconds_or_not_reached_per_target():
  table = tta.markdown([RESULT], [99.0, 99.5], {"cpu_label": "a CPU"})

  assert "CPU: a CPU." in table and "GPU" not in table
  assert "| `fast` | 99.08% | 21 | 10 | not reached |" in table.splitlines()


def test_markdown_names_the_gpu_the_runs_trained_on():
  machine = {"cpu_label": "a CPU", "gpus": ["NVIDIA H200 (compute capability 9.0)"]}
  table = tta.markdown([RESULT], [99.0], machine)

  assert "; GPU: NVIDIA H200 (compute capability 9.0); CPU: a CPU." in table.splitlines()[0]
