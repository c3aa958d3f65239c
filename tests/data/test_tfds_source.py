"""The tensorflow-datasets source: what it does without network or prepared data.

Loading prepared data needs tensorflow-datasets to have downloaded it, which
these machines cannot; the fallback to the official files is tested in
test_download.py.
"""

import pytest

from tfmnist.data.catalog import CATALOG
from tfmnist.errors import DataError
from tfmnist.data.sources import tfds as tfds_source


def test_unprepared_dataset_without_download_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match="not prepared"):
    tfds_source.load_tfds(CATALOG["kmnist"], data_dir=str(tmp_path), download=False)


def test_unreachable_host_fails_fast_instead_of_retrying(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, "host_reachable", lambda url, timeout_seconds=5.0: False)
  with pytest.raises(DataError, match="unreachable"):
    tfds_source.load_tfds(CATALOG["mnist"], data_dir=str(tmp_path))


def test_dataset_without_tfds_name_is_a_data_error():
  with pytest.raises(DataError, match="not in tensorflow-datasets"):
    tfds_source.load_tfds(CATALOG["digit_recognizer"])
