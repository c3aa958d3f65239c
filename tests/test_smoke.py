"""The first test the suite runs: the whole training loop, in process, on a few dozen images.

One epoch of the mlp on 40 synthetic training images (8 held out for
validation), then the export read back as any program would read it. If this
fails, the rest of the suite has nothing to stand on.
"""

import numpy as np

import train_fixtures as tfx
from tfmnist import run_dir
from tfmnist.data import prepare
from tfmnist.serving import inference
from tfmnist.training import loop


def test_one_epoch_on_a_few_dozen_images_trains_checkpoints_and_exports(tmp_path):
  source = tfx.write_npz(tmp_path / "tiny.npz", num_train=48, num_test=16)
  prepare.make_records(prepare.PrepareConfig(
      dataset="mnist", source="npz", source_dir=source, output_dir=str(tmp_path / "records"),
      validation_size=8, num_shards=2, show_progress=False))
  config = tfx.train_config(tmp_path / "run", tmp_path / "records", epochs=1,
                            global_batch_size=8, eval_batch_size=8, export=True,
                            learning_rate=0.01)
  final = loop.train_and_evaluate(config)

  assert final["step"] == 5 and final["epochs"] == 1  # 40 images / 8 per step.
  assert final["val_count"] == 8 and np.isfinite(final["val_loss"])
  folder = run_dir.RunDir(config.model_dir)
  assert folder.read_metrics()["step"] == 5
  assert folder.read_config()["model"] == "mlp"
  assert folder.read_manifest()["class_names"] == [str(i) for i in range(10)]
  model = inference.load(config.model_dir)
  images = np.zeros((3, 28, 28), np.uint8)
  probabilities = model.predict(images)
  assert probabilities.shape == (3, 10)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
