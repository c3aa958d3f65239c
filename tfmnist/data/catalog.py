"""The catalog of datasets tfmnist knows by name.

Each entry says what the classes are, where the official files live (with the
SHA-256 checksums the files must have), and under which name
tensorflow-datasets offers the same data. Datasets read from local files may
use any other name when their classes are given explicitly.
"""

import dataclasses
import string
from typing import Optional

from tfmnist.errors import DataError

IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One file of an official download: name relative to the base URL."""
  name: str
  sha256: str
  size_bytes: int


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What tfmnist knows about one dataset of the MNIST family.

  Attributes:
    name: folder name under the records directory.
    class_names: human-readable names, index = label.
    digits: True when the classes are digits or characters whose mirror image
      is another class or none (flips are refused for these).
    tfds_name: name in tensorflow-datasets, or None.
    base_url: official download location of `files`, or None.
    files: official files with checksums; IDX pairs keyed by split, or one
      archive (EMNIST) holding IDX members.
    idx_prefix: prefix of the IDX file names inside a folder or archive.
    transposed: the IDX images are stored column-major (EMNIST).
    label_offset: subtracted from raw labels (EMNIST letters count from 1).
    tall: upright images of this dataset have ink taller than wide (median
      per-image aspect 1.45 on MNIST's 60,000 training images, 1.26 on
      Fashion-MNIST's): an aspect below 1 means the files were read
      transposed. False where no reference was measured.
  """
  name: str
  class_names: tuple
  digits: bool = True
  tfds_name: Optional[str] = None
  base_url: Optional[str] = None
  files: tuple = ()
  idx_prefix: str = ""
  transposed: bool = False
  label_offset: int = 0
  tall: bool = False

  @property
  def num_classes(self):
    return len(self.class_names)


def _idx_files(sha256s, sizes):
  names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
  return tuple(RemoteFile(n, h, s) for n, h, s in zip(names, sha256s, sizes))


_DIGITS = tuple(str(d) for d in range(10))

# Checksums are those the dataset authors publish (and tensorflow-datasets
# pins) for the official files.
_EMNIST_ARCHIVE = (RemoteFile(
    "gzip.zip",
    "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e",
    561753746),)
_EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/"
# EMNIST balanced/bymerge merge the lower-case letters that look like their
# upper-case forms; byclass keeps all 62 classes.
_BYCLASS = _DIGITS + tuple(string.ascii_uppercase) + tuple(string.ascii_lowercase)
_MERGED = _DIGITS + tuple(string.ascii_uppercase) + tuple("abdefghnqrt")


def _emnist(subset, class_names, label_offset=0, digits=True, tall=False):
  return DatasetSpec(
      name=f"emnist_{subset}", class_names=class_names, digits=digits,
      tfds_name=f"emnist/{subset}", base_url=_EMNIST_URL,
      files=_EMNIST_ARCHIVE, idx_prefix=f"emnist-{subset}-", transposed=True,
      label_offset=label_offset, tall=tall)


CATALOG = {spec.name: spec for spec in (
    DatasetSpec(
        name="mnist", class_names=_DIGITS, tfds_name="mnist", tall=True,
        base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        files=_idx_files(
            ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
             "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
             "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
             "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
            (9912422, 28881, 1648877, 4542))),
    DatasetSpec(
        name="fashion_mnist", digits=False, tfds_name="fashion_mnist", tall=True,
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files=_idx_files(
            ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
             "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
            (26421880, 29515, 4422102, 5148))),
    DatasetSpec(
        name="kmnist", tfds_name="kmnist",
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        base_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        files=_idx_files(
            ("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
             "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
             "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
             "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
            (18165135, 29497, 3041136, 5120))),
    # EMNIST's digits are NIST digits normalised as MNIST's were.
    _emnist("digits", _DIGITS, tall=True),
    _emnist("mnist", _DIGITS, tall=True),
    _emnist("letters", tuple(string.ascii_uppercase), label_offset=1),
    _emnist("balanced", _MERGED),
    _emnist("bymerge", _MERGED),
    _emnist("byclass", _BYCLASS),
    # Kaggle competitions: files come from the user (CSV), never downloaded.
    DatasetSpec(name="digit_recognizer", class_names=_DIGITS, tall=True),  # MNIST's images.
    DatasetSpec(name="kannada_mnist", class_names=_DIGITS),
)}


def get_spec(name, class_names=None):
  """Returns the DatasetSpec for `name`.

  Args:
    name: a catalog name, or any folder-safe name when `class_names` is given.
    class_names: optional sequence of class names; required for names outside
      the catalog, and overrides the catalog's when given.

  Raises:
    DataError: the name is unknown and no class names were given.
  """
  if name in CATALOG:
    spec = CATALOG[name]
    if class_names:
      spec = dataclasses.replace(spec, class_names=tuple(class_names))
    return spec
  if not class_names:
    raise DataError(
        f"unknown dataset {name!r}: known are {', '.join(sorted(CATALOG))}; "
        "for other data give class_names (or num_classes) with a local source")
  if not name or any(c in name for c in "/\\ ") or name.startswith("."):
    raise DataError(f"dataset name {name!r} must be a plain folder name")
  return DatasetSpec(name=name, class_names=tuple(class_names), digits=False)
