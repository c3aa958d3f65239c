"""LiteRT (TFLite) files of an export, checked with LiteRT's own interpreter.

Every variant converts the export's `probabilities_of_pixels` function
(training.export): pixel values in [0, 255] at batch 1, [1, 28, 28, 1], in;
class probabilities [1, classes] out. The normalisation is inside, as in the
SavedModel.

  float32        the SavedModel's arithmetic as it is
  float16        weights stored as float16 (half the size), computed in float32
  dynamic_range  int8 weights, activations quantized on the fly
  int8           integers only, for microcontrollers and NPUs: uint8 input
                 (scale and zero point in the file; 1 and 0 for MNIST's pixels)
                 and uint8 probabilities, calibrated on images of the
                 training split

`check` runs the files in a separate interpreter that loads LiteRT's runtime
(ai-edge-litert) and numpy only (litert_check.py), one image at a time, as a
device would.
"""

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tfmnist import files, hardware, run_dir
from tfmnist.data import pipeline, records
from tfmnist.errors import DataError
from tfmnist.progress import Progress
from tfmnist.serving import inference
from tfmnist.training import export as export_lib
from tfmnist.training.choices import LITERT_VARIANTS as VARIANTS

FOLDER = "litert"  # Inside the export folder: replaced with it by the next export.
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
INSTALL_HINT = "pip install 'tfmnist[litert]'"
_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECK_SCRIPT = os.path.join(_HERE, "litert_check.py")
_CONVERT_SCRIPT = os.path.join(_HERE, "litert_convert.py")


def check_variants(variants):
  """`variants` as a tuple, or ValueError naming the unknown one."""
  variants = tuple(variants)
  for variant in variants:
    if variant not in VARIANTS:
      raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
  if not variants:
    raise ValueError(f"no variant to convert; choose from {', '.join(VARIANTS)}")
  return variants


def has_interpreter():
  """Whether LiteRT's interpreter (the ai-edge-litert package) is installed."""
  return importlib.util.find_spec("ai_edge_litert") is not None


def require_interpreter():
  """Raises DataError, naming the extra to install, when LiteRT's interpreter is missing."""
  if not has_interpreter():
    raise DataError(f"LiteRT's interpreter (ai-edge-litert) is not installed: {INSTALL_HINT}")


def _reexport_hint(export_dir):
  run = os.path.dirname(os.path.normpath(export_dir))
  return ("export it again: python -m tfmnist.train "
          f"--flagfile={os.path.join(run, 'flags.txt')} --export_checkpoint=latest "
          "(an ensemble: python -m tfmnist.predict ... --export_ensemble=DIR again)")


def check_export(export_dir):
  """Raises DataError when the export cannot be converted: it computes in a
  reduced precision or predates its LiteRT function (both exports made before
  exports became float32), or it is not a tfmnist export."""
  if not run_dir.is_export(export_dir):
    raise DataError(f"{export_dir}: not a SavedModel folder")
  reduced = sorted(export_lib.graph_dtypes(export_dir) & {"bfloat16", "float16"})
  if reduced:
    raise DataError(f"{export_dir}: the export computes in {reduced[0]}, which LiteRT's "
                    f"converter does not take; {_reexport_hint(export_dir)}")
  if not hasattr(tf.saved_model.load(export_dir), "probabilities_of_pixels"):
    raise DataError(f"{export_dir}: the export predates its LiteRT function "
                    f"(probabilities_of_pixels); {_reexport_hint(export_dir)}")


def _reason(message):
  """The converter's reason in one line: the error that names what failed."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  for line in lines:
    if " error: " in line:
      reason = line.split(" error: ", 1)[1]
      if "neither a custom op nor a flex op" in reason:
        reason += " (LiteRT has no kernel for it)"
      return reason
  return lines[0] if lines else "no reason given"


def _run_child(script, request, on_line):
  """Runs a helper program (python -I script request.json), passing each JSON line it prints.

  -I: no script folder, user site or PYTHON* variables on the path, so it
  imports what an installed environment has and nothing of the caller's.

  Returns:
    (exit code, the last line of its stderr).
  """
  child = subprocess.Popen([sys.executable, "-I", script, request], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  for line in child.stdout:
    on_line(json.loads(line))
  stderr = [line for line in child.stderr.read().splitlines() if line.strip()]
  return child.wait(), (stderr[-1] if stderr else "")


def convert(export_dir, calibration_images, variants=VARIANTS):
  """{variant: flatbuffer bytes} of the export, made in a separate process (litert_convert.py).

  Args:
    export_dir: a tfmnist SavedModel (a run's export or an exported ensemble).
    calibration_images: uint8 [N, 28, 28, 1] training images; the int8
      variant's activation ranges are measured on them.
    variants: which of VARIANTS to convert.

  Raises:
    DataError: the export cannot be converted (see check_export), or the
      converter fails or crashes, e.g. on an op LiteRT lacks.
  """
  variants = check_variants(variants)
  check_export(export_dir)
  with tempfile.TemporaryDirectory(prefix="tfmnist-litert-") as tmp:
    calibration = os.path.join(tmp, "calibration.npz")
    np.savez(calibration, images=np.asarray(calibration_images, np.uint8))
    request = os.path.join(tmp, "request.json")
    with open(request, "w") as f:
      json.dump({"export": os.path.abspath(export_dir), "calibration": calibration,
                 "variants": list(variants), "output": tmp}, f)
    state = {"variant": variants[0], "error": None}

    def on_line(message):
      state["variant"] = message.get("variant", state["variant"])
      if "error" in message:
        state["error"] = message["message"]

    code, last_line = _run_child(_CONVERT_SCRIPT, request, on_line)
    where = f"{export_dir}: cannot convert to LiteRT {state['variant']}"
    if state["error"] is not None:
      raise DataError(f"{where}: {_reason(state['error'])}")
    if code < 0:
      name = signal.Signals(-code).name
      raise DataError(f"{where}: LiteRT's converter crashed ({name}); the model holds an "
                      "op it cannot handle in this variant; set variants to the others")
    if code != 0:
      raise DataError(f"{where}: {last_line or f'the converter exited with {code}'}")
    flatbuffers = {}
    for variant in variants:
      with open(os.path.join(tmp, f"{variant}.tflite"), "rb") as f:
        flatbuffers[variant] = f.read()
  return flatbuffers


def check(paths, images, labels, reference, threads=1, progress=None):
  """Runs LiteRT files on labelled images in a separate interpreter (litert_check.py).

  Args:
    paths: .tflite files.
    images: uint8 [N, 28, 28, 1]; labels: [N]; reference: the SavedModel's
      classes [N].
    threads: LiteRT interpreter threads.
    progress: called with the number of images done since the last call.

  Returns:
    (a dict per file: bytes, accuracy, agreement, ms_per_image, input,
    output; {"tfmnist": loaded?, "tensorflow": loaded?} of that interpreter).

  Raises:
    DataError: LiteRT's interpreter is not installed, or it failed.
  """
  require_interpreter()
  with tempfile.TemporaryDirectory(prefix="tfmnist-litert-") as tmp:
    data = os.path.join(tmp, "data.npz")
    np.savez(data, images=np.asarray(images, np.uint8), labels=np.asarray(labels),
             reference=np.asarray(reference))
    request = os.path.join(tmp, "request.json")
    with open(request, "w") as f:
      json.dump({"files": [os.path.abspath(p) for p in paths], "data": data,
                 "threads": int(threads)}, f)
    state = {"answer": None, "done": {}}

    def on_line(message):
      if "done" in message:
        if progress:
          progress(message["done"] - state["done"].get(message["file"], 0))
        state["done"][message["file"]] = message["done"]
      else:
        state["answer"] = message

    code, last_line = _run_child(_CHECK_SCRIPT, request, on_line)
    answer = state["answer"]
    if code != 0 or answer is None:
      raise DataError(f"LiteRT's interpreter failed: {last_line or f'exit code {code}'}")
  return answer["results"], answer["loaded"]


def write(folder, flatbuffers, write_report):
  """Writes the .tflite files and the report into `folder` atomically.

  `write_report(tmp, paths)` runs with the files in a temporary folder
  (their checks read them there); the folder replaces `folder` only when
  it returns, so a failure leaves no partial files and any earlier folder as
  it was.

  Returns:
    {variant: final path}.
  """
  with files.atomic_folder(folder, overwrite=True) as tmp:
    paths = {}
    for variant, flatbuffer in flatbuffers.items():
      paths[variant] = os.path.join(tmp, f"{variant}.tflite")
      with open(paths[variant], "wb") as f:
        f.write(flatbuffer)
    write_report(tmp, paths)
  return {variant: os.path.join(folder, os.path.basename(p)) for variant, p in paths.items()}


def report_markdown(report):
  """report.md of a report dict (see the convert command)."""
  rows = report["files"]
  float32 = next((r for r in rows if r["variant"] == "float32"), None)
  lines = [f"# LiteRT files of {report['export']}", "",
           f"{report['dataset']} {report['split']}, {report['images']:,} images, one at a time "
           f"(batch 1) with LiteRT's interpreter ({report['interpreter']}, "
           f"{report['threads']} thread{'s' if report['threads'] != 1 else ''}) on "
           f"{report['cpu']['model']}. The SavedModel: accuracy "
           f"{report['saved_model_accuracy']:.2%}. int8 calibrated on "
           f"{report['calibration_images']} images of {report['calibration_split']}.", "",
           "| file | size | of float32 | accuracy | vs SavedModel | agreement | ms/image |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for row in rows:
    share = f"{row['bytes'] / float32['bytes']:.0%}" if float32 else "-"
    delta = 100 * (row["accuracy"] - report["saved_model_accuracy"])
    lines.append(f"| {row['file']} | {row['bytes'] / 1024:,.0f} KiB | {share} | "
                 f"{row['accuracy']:.2%} | {delta:+.2f} pp | {row['agreement']:.2%} | "
                 f"{row['ms_per_image']:.3f} |")
  int8 = next((r for r in rows if r["variant"] == "int8"), None)
  if int8:
    lines += ["", f"int8 input: uint8 [1, 28, 28, 1], scale {int8['input']['scale']:g}, zero "
              f"point {int8['input']['zero_point']} (quantized = round(pixel / scale + zero "
              f"point)); output: uint8 probabilities, scale {int8['output']['scale']:g}, "
              f"zero point {int8['output']['zero_point']}."]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# A run's files, checked and reported
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class ConvertConfig:
  """What `convert_model` converts, and what it checks the files on.

  Attributes:
    model_dir: a run folder (its export/) or an export folder itself.
    variants: which of VARIANTS to write.
    dataset, records_dir: where the images come from; empty: the run's.
    split: the labelled split every file is checked on.
    check_images: the first this many images of `split`; 0: all.
    calibration_split, calibration_images: the int8 file's calibration images
      (the first ones of the split: records are shuffled when written).
    threads: LiteRT interpreter threads for the check.
    progress: show a progress bar over the images checked.
  """
  model_dir: str
  variants: tuple = VARIANTS
  dataset: str = ""
  records_dir: str = ""
  split: str = "test"
  check_images: int = 0
  calibration_split: str = "train"
  calibration_images: int = 500
  threads: int = 1
  progress: bool = True


def export_dir_of(model_dir):
  """The SavedModel a run folder (or an export folder) converts, or DataError."""
  if run_dir.is_export(model_dir):
    return model_dir
  if not os.path.isdir(model_dir):
    raise DataError(f"{model_dir}: no such run folder")
  folder = run_dir.RunDir(model_dir)
  if not folder.has_export():
    raise DataError(f"{model_dir}: no export/ to convert; export its latest checkpoint "
                    "first: python -m tfmnist.train "
                    f"--flagfile={os.path.join(model_dir, 'flags.txt')} "
                    "--export_checkpoint=latest")
  return folder.export


def convert_model(config):
  """Converts a run's export, checks every file, and writes them with the report.

  Writes <export>/litert/: one <variant>.tflite per variant, report.json and
  report.md, all at once or (on any error) nothing.

  Returns:
    (the litert folder, the report dict).

  Raises:
    DataError, ValueError: one line saying what is wrong, with nothing written.
  """
  variants = check_variants(config.variants)
  require_interpreter()  # Before any work: the check needs it.
  export_dir = export_dir_of(config.model_dir)
  settings = inference.run_settings(config.model_dir)
  dataset = config.dataset or settings.dataset
  records_dir = config.records_dir or settings.records_dir or "records"
  if not dataset:
    raise DataError(f"{config.model_dir}: no manifest.json naming the dataset; set dataset")
  calibration = pipeline.read_examples(records.split_files(
      records_dir, dataset, config.calibration_split)).image.numpy()
  calibration = calibration[:config.calibration_images]
  _, images, labels = pipeline.read_labelled(records_dir, dataset, config.split)
  if config.check_images:
    images, labels = images[:config.check_images], labels[:config.check_images]
  reference = inference.ExportedModel(export_dir).predict(images).argmax(1)
  flatbuffers = convert(export_dir, calibration, variants)
  report = {"export": export_dir, "dataset": dataset, "split": config.split,
            "images": int(len(labels)), "calibration_split": config.calibration_split,
            "calibration_images": int(len(calibration)), "threads": config.threads,
            "interpreter": f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}",
            "cpu": hardware.describe_cpu(),
            "saved_model_accuracy": float(np.mean(reference == labels))}

  def check_and_report(folder, paths):
    bar = Progress(len(labels) * len(paths), "images", desc="checking with LiteRT",
                   enabled=config.progress)
    rows, loaded = check(list(paths.values()), images, labels, reference, config.threads,
                         bar.update)
    if any(loaded.values()):  # The check must see what a device without them sees.
      raise DataError(f"the LiteRT check loaded {[n for n, v in loaded.items() if v]}")
    report["files"] = [{"variant": variant, **row} for variant, row in zip(paths, rows)]
    with open(os.path.join(folder, REPORT_JSON), "w") as f:
      json.dump(report, f, indent=1)
    with open(os.path.join(folder, REPORT_MD), "w") as f:
      f.write(report_markdown(report))

  folder = os.path.join(export_dir, FOLDER)
  write(folder, flatbuffers, check_and_report)
  return folder, report
