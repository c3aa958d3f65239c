"""The last line of `python -m tfmnist.train` (cli/train.done_line).

cli/train.py defines the flags that cli/predict.py, imported in process by
other tests, defines too, so it is called in a fresh interpreter (its flags
load without TensorFlow, in a fraction of a second). tests/cli/test_train.py
starts the command itself.
"""

import json

import train_fixtures as tfx

CASES = [
    ({"test": {"labeled": True}}, {"step": 1266, "val_accuracy": 0.99204},
     "done: step 1266, validation accuracy 99.20%; "
     "test: python -m tfmnist.evaluate --model_dir=runs/fast"),
    ({"test": {"labeled": False}}, {"step": 10},
     "done: step 10, no validation split; test (unlabelled): python -m tfmnist.predict "
     "--model_dir=runs/fast --input=records/mnist --split=test"),
    ({"train": {"labeled": True}}, {"step": 10, "val_accuracy": 0.5},
     "done: step 10, validation accuracy 50.00%; run folder runs/fast"),
]
CODE = """
import json, sys, types
from tfmnist.cli import train
config = types.SimpleNamespace(model_dir="runs/fast", records_dir="records", dataset="mnist")
print(json.dumps([train.done_line(config, final, {"splits": splits})
                  for splits, final in json.loads(sys.argv[1])]))
"""


def test_done_line_says_where_the_test_score_comes_from():
  cases = json.dumps([[splits, final] for splits, final, _ in CASES])
  result = tfx.check(tfx.run([tfx.PYTHON, "-c", CODE, cases]))
  assert json.loads(result.stdout) == [line for _, _, line in CASES]
