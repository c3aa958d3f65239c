"""`TrainConfig`: everything a run needs, its checks, and its config.json form.

The command line builds one TrainConfig from its flags; the run folder keeps
it as config.json (with the precision resolved), from which evaluation and
prediction rebuild the model of any checkpoint in process. Field names are
the flag names, so an error that names a field names the flag too.
"""

import dataclasses

from tfmnist import hardware, run_dir
from tfmnist.data import augment as augment_lib
from tfmnist.errors import DataError
from tfmnist.training import optim, schedules
from tfmnist.training.choices import PRECISIONS


@dataclasses.dataclass
class TrainConfig:
  """Everything a run needs; built once by the entry point from its flags.

  Durations are in epochs here (as users think of them) and are turned into
  steps once, when the steps per epoch are known.
  """
  model_dir: str
  dataset: str = "mnist"
  records_dir: str = "records"
  model: str = "lenet"
  epochs: float = 15
  global_batch_size: int = 128
  eval_batch_size: int = 1000
  strategy: str = "default"
  num_virtual_devices: int = 0
  tpu: str = ""
  deterministic: bool = False
  seed: int = 0
  optimizer: optim.OptimizerConfig = dataclasses.field(default_factory=optim.OptimizerConfig)
  learning_rate: float = 1e-3
  schedule: str = "constant"
  warmup_epochs: float = 0.0
  decay_epochs: float = 1.0
  decay_rate: float = 0.1
  final_lr_fraction: float = 0.0
  plateau: schedules.PlateauConfig = dataclasses.field(default_factory=schedules.PlateauConfig)
  label_smoothing: float = 0.0
  clip_norm: float = 0.0
  precision: str = "float32"  # A Keras dtype policy, or "auto" (hardware.choose_precision).
  steps_per_loop: int = 50
  checkpoint_every_steps: int = 0
  keep_checkpoints: int = 3
  early_stopping_patience: int = 0
  # At the end: each BatchNorm's statistics measured over the training
  # images at inference (models.batch_norm_statistics).
  recompute_bn_statistics: bool = False
  # From this epoch on, evaluation and export use the equal-weight mean of
  # the weights after each step (SWA); a cosine or one-cycle schedule ends
  # here and holds its final rate. 0: off.
  swa_start_epoch: float = 0.0
  augment: augment_lib.AugmentConfig = dataclasses.field(
      default_factory=augment_lib.AugmentConfig)
  sharding: str = "auto"
  train_splits: tuple = ("train",)
  validation_split: str = "validation"  # Empty: no validation.
  export: bool = True
  export_dir: str = ""  # Empty: <model_dir>/export.
  progress: bool = True
  flags_text: str = ""  # The flags of the run, saved as flags.txt and in TensorBoard.


_NESTED = {"optimizer": optim.OptimizerConfig, "plateau": schedules.PlateauConfig,
           "augment": augment_lib.AugmentConfig}
# Fields that belong to one invocation, not to what the run trains.
_NOT_SAVED = ("model_dir", "export", "export_dir", "progress", "flags_text")


def to_dict(config):
  """The config as plain JSON values (config.json), without per-invocation fields."""
  values = dataclasses.asdict(config)
  return {k: v for k, v in values.items() if k not in _NOT_SAVED}


def from_dict(values, model_dir):
  """The TrainConfig that `to_dict` wrote, for the run folder `model_dir`.

  Raises:
    DataError: a field this tfmnist does not know (a newer run folder).
  """
  known = {f.name for f in dataclasses.fields(TrainConfig)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise DataError(f"{model_dir}: config.json has fields this tfmnist does not know "
                    f"({', '.join(unknown)}); use the tfmnist that trained it")
  fields = dict(values)
  for name, cls in _NESTED.items():
    if name in fields:
      nested = dict(fields[name])
      if name == "augment" and "erase_area" in nested:
        nested["erase_area"] = tuple(nested["erase_area"])
      fields[name] = cls(**nested)
  if "train_splits" in fields:
    fields["train_splits"] = tuple(fields["train_splits"])
  return TrainConfig(model_dir=model_dir, **fields)


def check(config, info, num_replicas):
  """Raises ValueError or DataError (naming the field and value) for settings that cannot work.

  Args:
    config: TrainConfig with its precision resolved.
    info: the dataset's info.json.
    num_replicas: replicas in sync under the run's strategy.
  """
  if config.global_batch_size % num_replicas:
    raise ValueError(f"global batch size {config.global_batch_size} does not divide among "
                     f"{num_replicas} replicas")
  if config.eval_batch_size % num_replicas:
    raise ValueError(f"eval batch size {config.eval_batch_size} does not divide among "
                     f"{num_replicas} replicas")
  augment_lib.validate(config.augment, info["digits"])
  for split in (*config.train_splits, config.validation_split):
    if split and split not in info["splits"]:
      hint = "; make the records with a validation_size" if split == "validation" else ""
      raise DataError(f"{config.dataset} has no {split!r} split (has "
                      f"{', '.join(info['splits'])}){hint}")
  if not config.train_splits:
    raise ValueError("train_splits is empty; name the splits to train on")
  if config.swa_start_epoch:
    if config.optimizer.ema_decay:
      raise ValueError(f"swa_start_epoch={config.swa_start_epoch:g} and "
                       f"ema_decay={config.optimizer.ema_decay:g} are two weight averages; "
                       "choose one")
    if not config.warmup_epochs <= config.swa_start_epoch < config.epochs:
      raise ValueError(f"swa_start_epoch={config.swa_start_epoch:g} must lie between "
                       f"warmup_epochs={config.warmup_epochs:g} and epochs={config.epochs:g}; "
                       "move it, or set it to 0 to train without the average")
  if config.validation_split in config.train_splits:
    raise ValueError(f"validation_split={config.validation_split} is also in train_splits; "
                     "set validation_split= (empty) to train without validation")
  if not config.validation_split:
    needs = [name for name, used in (("plateau_monitor", config.plateau.monitor),
                                     ("early_stopping_patience",
                                      config.early_stopping_patience)) if used]
    if needs:
      several = len(needs) > 1
      raise ValueError(f"{' and '.join(needs)} need{'' if several else 's'} a validation split; "
                       f"drop {'them' if several else 'it'} or set validation_split")


def swa_start_step(config, steps_per_epoch):
  """The step from which the weights are averaged (SWA), and where the schedule ends."""
  return int(round(config.swa_start_epoch * steps_per_epoch))


def weight_average(config, variables, steps_per_epoch):
  """The run's optim.WeightAverage of `variables` (EMA or SWA), or None without one.

  Restoring a checkpoint needs only the averages' variables: any
  steps_per_epoch builds them.
  """
  if config.swa_start_epoch > 0:
    return optim.WeightAverage(variables, start_step=swa_start_step(config, steps_per_epoch))
  if config.optimizer.ema_decay > 0:
    return optim.WeightAverage(variables, config.optimizer.ema_decay)
  return None


def check_precision(precision):
  if precision not in PRECISIONS:
    raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def resolve_precision(requested, recorded, machine):
  """(dtype policy, reason) of a run.

  "auto" is decided once per run folder: a run that resumes keeps the policy
  its first start chose, so that it ends where an uninterrupted run would
  even on another machine.

  Args:
    requested: the configured precision (a policy or "auto").
    recorded: {"requested", "policy", "reason"} that the run's first start
      recorded (manifest.json), or None.
    machine: hardware.Machine to choose for.
  """
  check_precision(requested)
  if requested != "auto":
    return requested, "as configured"
  if (recorded and recorded.get("requested") == "auto"
      and recorded.get("policy") in PRECISIONS[1:]):
    return recorded["policy"], f"chosen when the run started: {recorded.get('reason', '')}"
  return hardware.choose_precision(machine)


def check_trainable(requested, policy, machine):
  """Raises ValueError where `machine` cannot train in `policy`.

  auto never chooses such a policy; a precision asked for, or one that a run
  resuming with auto keeps from its first start, can be one. Exports and
  evaluation compute in float32, so only training checks this.

  Args:
    requested: the configured precision (a policy or "auto").
    policy: the policy resolve_precision settled on.
    machine: hardware.Machine the run trains on.
  """
  conflict = hardware.bfloat16_conflict(machine) if policy == "mixed_bfloat16" else ""
  if conflict:
    how = "asked for" if requested != "auto" else "the run's --precision=auto chose when it started"
    raise ValueError(f"precision mixed_bfloat16 ({how}) cannot run here: {conflict}; unset "
                     "ONEDNN_MAX_CPU_ISA, set it to AVX512_CORE or above, or set "
                     "TF_ENABLE_ONEDNN_OPTS=0")


def export_dir_of(config):
  """Where the run's SavedModel goes."""
  return config.export_dir or run_dir.RunDir(config.model_dir).export


def _describe(model, dataset, requested, policy, class_names=None):
  """What a run trains, e.g. "lenet on mnist (auto: float32)", and its classes if given."""
  precision = f"{requested}: {policy}" if requested == "auto" else policy
  classes = f", classes {','.join(class_names)}" if class_names else ""
  return f"{model} on {dataset} ({precision}{classes})"


def check_same_run(config, precision, class_names):
  """Raises DataError when config.model_dir already holds a run of something else.

  Rerunning a command resumes the run in its folder, and the rerun may
  change the run's length, schedule and the like; its model, dataset,
  classes and precision stay those the folder's manifest.json and
  config.json record (a run started with precision auto keeps its first
  choice: resolve_precision). Another run's checkpoints would not restore,
  so the folder is refused, naming what it holds, before the run restores
  or writes anything in it.

  Args:
    config: the TrainConfig asked for.
    precision: {"requested", "policy"} asked for, the policy resolved with
      the folder's record (resolve_precision).
    class_names: the classes of the records asked for.
  """
  folder = run_dir.RunDir(config.model_dir)
  recorded, manifest = folder.read_config() or {}, folder.read_manifest()
  if not recorded and not manifest:
    return  # A new run, or a folder from before these files.
  held_precision = manifest.get("precision") or {}
  held = {"model": manifest.get("model", recorded.get("model")),
          "dataset": manifest.get("dataset", recorded.get("dataset")),
          "policy": held_precision.get("policy", recorded.get("precision")),
          "class_names": manifest.get("class_names")}
  asked = {"model": config.model, "dataset": config.dataset, "policy": precision["policy"],
           "class_names": list(class_names)}
  differ = [k for k, value in held.items() if value is not None and value != asked[k]]
  if not differ:
    return
  named = "class_names" in differ
  held_text = _describe(held["model"], held["dataset"], held_precision.get("requested"),
                        held["policy"], held["class_names"] if named else None)
  asked_text = _describe(config.model, config.dataset, precision["requested"],
                         precision["policy"], asked["class_names"] if named else None)
  raise DataError(f"{config.model_dir} holds a run of {held_text}; asked for {asked_text}: "
                  "choose another model_dir, or delete the folder to start over")
