r"""Trains a model: python -m tfmnist.train --flagfile=lenet.flags

The entry point reads flags, builds one TrainConfig, prepares the records
when they are missing, and hands the config to training.loop.train_and_evaluate;
rerunning the same command resumes the run.
"""

import os
import sys

from absl import app, flags

from tfmnist.cli import augment_flags, flagfiles, startup
from tfmnist.cli.messages import as_flags
from tfmnist.errors import DataError, NonFiniteLoss, SaveError
from tfmnist.training import choices

# The modules that need TensorFlow are imported where they are used, after
# the flags are parsed (startup.py).

# Run and data.
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run folder: checkpoints, logs, export.")
_DATASET = flags.DEFINE_string("dataset", "mnist", "Dataset folder name under --records_dir.")
_RECORDS_DIR = flags.DEFINE_string("records_dir", "records", "Folder of prepared records.")
_SOURCE_DIR = flags.DEFINE_string(
    "source_dir", "", "Local IDX/NPZ files to prepare the records from when they are missing.")
_TRAIN_SPLITS = flags.DEFINE_list(
    "train_splits", ["train"], "Splits trained on; train,validation refits a recipe chosen "
    "on validation on all labelled images (with --validation_split=).")
_VALIDATION_SPLIT = flags.DEFINE_string(
    "validation_split", "validation", "Split evaluated after every epoch; empty: none (no "
    "best checkpoint, reduce-on-plateau or early stopping).")
_SHARDING = flags.DEFINE_enum("sharding", "auto", ("auto", "file", "data"),
                              "How workers split the training shards.")
# Model and length.
_MODEL = flags.DEFINE_string("model", "lenet", "Registered model name (tfmnist.models).")
_EPOCHS = flags.DEFINE_float("epochs", 15, "Training length in epochs (may be fractional).")
_GLOBAL_BATCH = flags.DEFINE_integer("global_batch_size", 128,
                                     "Images per step summed over all replicas.", lower_bound=1)
_EVAL_BATCH = flags.DEFINE_integer("eval_batch_size", 1000,
                                   "Images per evaluation step over all replicas.", lower_bound=1)
# Distribution and reproducibility.
_STRATEGY = flags.DEFINE_enum("strategy", "default", choices.STRATEGIES,
                              "tf.distribute strategy; multi_worker reads TF_CONFIG.")
_NUM_VIRTUAL = flags.DEFINE_integer(
    "num_virtual_devices", 0, "Split the CPU into this many logical devices (count; for "
    "testing mirrored training without GPUs). 0 or 1: no split.")
_TPU = flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False,
                                   "Deterministic ops: same flags, bit-identical weights.")
_SEED = flags.DEFINE_integer("seed", 0, "The one seed: init, data order, augmentation, dropout.")
_PRECISION = flags.DEFINE_enum(
    "precision", "float32", choices.PRECISIONS,
    "Keras dtype policy; mixed_float16 adds loss scaling. auto: mixed_bfloat16 where the "
    "hardware computes bfloat16 natively (TPUs, GPUs from compute capability 8.0, CPUs with "
    "AVX-512 BF16 or AMX), mixed_float16 on older GPUs with tensor cores, else float32; a "
    "resumed run keeps its first choice.")
# Optimizer.
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", choices.OPTIMIZERS, "Optimizer.")
_LR = flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (per step, unitless).")
_MOMENTUM = flags.DEFINE_float("momentum", 0.0, "SGD / RMSprop momentum.")
_NESTEROV = flags.DEFINE_bool("nesterov", False, "Nesterov momentum (SGD).")
_BETA_1 = flags.DEFINE_float("beta_1", 0.9, "Adam/AdamW first-moment decay.")
_BETA_2 = flags.DEFINE_float("beta_2", 0.999, "Adam/AdamW second-moment decay.")
_RHO = flags.DEFINE_float("rho", 0.9, "RMSprop squared-gradient decay.")
_EPSILON = flags.DEFINE_float("epsilon", 1e-7, "Adam/RMSprop epsilon.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay: each step shrinks "
                                    "the weights by learning rate x this.")
_EMA_DECAY = flags.DEFINE_float("ema_decay", 0.0, "EMA decay of weights for eval/export, warmed up "
                                  "as min(decay, (1 + step) / (10 + step)); 0 off.")
_SWA_START = flags.DEFINE_float(
    "swa_start_epoch", 0.0, "From this epoch on, evaluate and export the equal-weight mean of "
    "the weights after each step (SWA); a cosine or one-cycle schedule ends here and holds "
    "its final rate (cosine: final_lr_fraction x learning_rate); 0 off.")
_LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing (fraction).")
_CLIP_NORM = flags.DEFINE_float("clip_norm", 0.0, "Clip gradients to this global norm; 0 off.")
# Learning-rate schedule.
_SCHEDULE = flags.DEFINE_enum("schedule", "constant", choices.SCHEDULES, "LR schedule.")
_WARMUP = flags.DEFINE_float("warmup_epochs", 0.0, "Linear warmup length in epochs.")
_DECAY_EPOCHS = flags.DEFINE_float("decay_epochs", 1.0, "Step/exponential decay period (epochs).")
_DECAY_RATE = flags.DEFINE_float("decay_rate", 0.1, "Step/exponential factor per period.")
_FINAL_LR = flags.DEFINE_float("final_lr_fraction", 0.0, "Cosine end LR as a fraction of peak.")
_PLATEAU_MONITOR = flags.DEFINE_enum(
    "plateau_monitor", "", ("", "val_accuracy", "val_loss"),
    "Reduce the LR when this stops improving; empty: off.")
_PLATEAU_FACTOR = flags.DEFINE_float("plateau_factor", 0.5, "LR multiplier on a plateau.")
_PLATEAU_PATIENCE = flags.DEFINE_integer("plateau_patience", 3,
                                         "Epochs without improvement before reducing.")
_PLATEAU_COOLDOWN = flags.DEFINE_integer("plateau_cooldown", 0, "Epochs to wait after a cut.")
_PLATEAU_MIN_LR = flags.DEFINE_float("plateau_min_lr", 0.0, "Lowest LR a plateau cut reaches.")
_EARLY_STOP = flags.DEFINE_integer("early_stopping_patience", 0,
                                   "Stop after this many epochs without a better val accuracy.")
_RECOMPUTE_BN = flags.DEFINE_bool(
    "recompute_bn_statistics", False, "At the end of training, set every BatchNorm's "
    "statistics to the exact mean and variance of its input at inference (dropout off, "
    "images not augmented) over the training images; one inference pass per BatchNorm.")
# Loop and checkpoints.
_STEPS_PER_LOOP = flags.DEFINE_integer("steps_per_loop", 50,
                                       "Steps per traced loop call (count).", lower_bound=1)
_CKPT_STEPS = flags.DEFINE_integer("checkpoint_every_steps", 0,
                                   "Also checkpoint every N steps; 0: only at epoch ends.")
_KEEP = flags.DEFINE_integer("keep_checkpoints", 3, "Newest checkpoints kept.")
_EXPORT = flags.DEFINE_bool("export", True, "Write the SavedModel to <model_dir>/export.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show the per-epoch progress bar.")
_EXPORT_CHECKPOINT = flags.DEFINE_string(
    "export_checkpoint", "", "Do not train: export this checkpoint ('latest', 'best' or a "
    "path) of the run as a SavedModel, then stop.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", "", "Where the SavedModel goes; empty: "
                                  "<model_dir>/export.")
# Flags that act on this invocation only, not on what the run trains.
_NOT_SAVED = ("export_checkpoint", "export_dir")


def flags_text():
  """The flags that differ from their defaults, as a flagfile."""
  lines = []
  for module in (sys.modules[__name__], augment_flags):
    for flag in flags.FLAGS.get_flags_for_module(module):
      if flag.name in _NOT_SAVED:
        continue
      if flag.present or flag.value != flag.default:
        lines.append(flag.serialize())
  return "\n".join(sorted(lines)) + "\n"


def config_from_flags():
  """The one place that reads FLAGS (but --source_dir, which is not the run's)."""
  from tfmnist.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfmnist.training import optim, schedules  # pylint: disable=g-import-not-at-top
  return config_lib.TrainConfig(
      model_dir=_MODEL_DIR.value, dataset=_DATASET.value, records_dir=_RECORDS_DIR.value,
      model=_MODEL.value, epochs=_EPOCHS.value,
      global_batch_size=_GLOBAL_BATCH.value, eval_batch_size=_EVAL_BATCH.value,
      strategy=_STRATEGY.value, num_virtual_devices=_NUM_VIRTUAL.value, tpu=_TPU.value,
      deterministic=_DETERMINISTIC.value, seed=_SEED.value,
      optimizer=optim.OptimizerConfig(
          name=_OPTIMIZER.value, momentum=_MOMENTUM.value, nesterov=_NESTEROV.value,
          beta_1=_BETA_1.value, beta_2=_BETA_2.value, rho=_RHO.value, epsilon=_EPSILON.value,
          weight_decay=_WEIGHT_DECAY.value, ema_decay=_EMA_DECAY.value),
      learning_rate=_LR.value, schedule=_SCHEDULE.value, warmup_epochs=_WARMUP.value,
      decay_epochs=_DECAY_EPOCHS.value, decay_rate=_DECAY_RATE.value,
      final_lr_fraction=_FINAL_LR.value,
      plateau=schedules.PlateauConfig(
          monitor=_PLATEAU_MONITOR.value, factor=_PLATEAU_FACTOR.value,
          patience=_PLATEAU_PATIENCE.value, cooldown=_PLATEAU_COOLDOWN.value,
          min_lr=_PLATEAU_MIN_LR.value),
      label_smoothing=_LABEL_SMOOTHING.value, clip_norm=_CLIP_NORM.value,
      precision=_PRECISION.value, steps_per_loop=_STEPS_PER_LOOP.value,
      checkpoint_every_steps=_CKPT_STEPS.value, keep_checkpoints=_KEEP.value,
      early_stopping_patience=_EARLY_STOP.value,
      recompute_bn_statistics=_RECOMPUTE_BN.value, swa_start_epoch=_SWA_START.value,
      augment=augment_flags.augment_config(),
      sharding=_SHARDING.value, train_splits=tuple(_TRAIN_SPLITS.value),
      validation_split=_VALIDATION_SPLIT.value,
      export=_EXPORT.value, export_dir=_EXPORT_DIR.value, progress=_PROGRESS.value,
      flags_text=flags_text())


def _ensure_records(config):
  """The run's records: prepared from --source_dir (or downloaded) when missing."""
  from tfmnist.data import prepare  # pylint: disable=g-import-not-at-top
  return prepare.ensure_records(config.records_dir, config.dataset, _SOURCE_DIR.value,
                                show_progress=config.progress, say=print)


def export_checkpoint(config, checkpoint):
  """--export_checkpoint: one checkpoint of the run as a SavedModel; returns its path."""
  from tfmnist import run_dir  # pylint: disable=g-import-not-at-top
  from tfmnist.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfmnist.training import export  # pylint: disable=g-import-not-at-top
  class_names = run_dir.RunDir(config.model_dir).read_manifest().get("class_names")
  if not class_names:  # A run folder from before the manifest named its classes.
    class_names = _ensure_records(config)["class_names"]
  return export.export_checkpoint(config, checkpoint, config_lib.export_dir_of(config),
                                  class_names)


def main(argv):
  for warning in flagfiles.overridden(sys.argv, flags.FLAGS):
    print(f"train: warning: {warning}", file=sys.stderr)
  startup.begin(argv, "train")
  from tfmnist.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfmnist.training import loop  # pylint: disable=g-import-not-at-top
  try:
    config = config_from_flags()
    if _EXPORT_CHECKPOINT.value:
      path = export_checkpoint(config, _EXPORT_CHECKPOINT.value)
      print(f"exported {path} to {config_lib.export_dir_of(config)}")
      return
    info = _ensure_records(config)
    final = loop.train_and_evaluate(config, say=print)
  except (DataError, ValueError, NonFiniteLoss, SaveError) as e:
    sys.exit(f"train: error: {as_flags(str(e))}")
  if final.get("preempted"):
    sys.exit(143)
  print(done_line(config, final, info))


def done_line(config, final, info):
  """The last line of a run: its validation accuracy, and how to score it on the test split.

  Training never looks at the test split; evaluate does, through the export.
  """
  validation = (f"validation accuracy {final['val_accuracy']:.2%}" if "val_accuracy" in final
                else "no validation split")
  test = info["splits"].get("test")
  if test is None:
    then = f"run folder {config.model_dir}"
  elif test.get("labeled", True):
    then = f"test: python -m tfmnist.evaluate --model_dir={config.model_dir}"
  else:  # Kaggle's test.csv: predictions, not a score.
    then = (f"test (unlabelled): python -m tfmnist.predict --model_dir={config.model_dir} "
            f"--input={os.path.join(config.records_dir, config.dataset)} --split=test")
  return f"done: step {final['step']}, {validation}; {then}"


def run():
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
