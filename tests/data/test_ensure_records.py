"""Tests of prepare.ensure_records: the records a run needs, prepared when missing."""

import pytest

import train_fixtures as tfx
from tfmnist.data import prepare, records
from tfmnist.errors import DataError


def test_missing_records_without_source_name_make_records(tmp_path, monkeypatch):
  # An empty local mirror keeps the attempt to fetch the files offline and quick.
  mirror = tmp_path / "mirror"
  mirror.mkdir()
  monkeypatch.setenv("TFMNIST_DOWNLOAD_BASE_URL", mirror.as_uri() + "/")
  with pytest.raises(DataError) as error:
    prepare.ensure_records(str(tmp_path / "records"), "mnist", show_progress=False)
  message = str(error.value)
  assert "\n" not in message
  assert f"python tools/make_records.py --dataset=mnist --output_dir={tmp_path / 'records'}" \
      in message
  # The way out that train itself offers, and none of make_records' own settings.
  assert "without internet, set source_dir=DIR to prepare them from local IDX or NPZ " \
      "files of mnist" in message
  assert "download_base_url" not in message and "source idx" not in message


def test_records_another_worker_prepared_meanwhile_are_used(tmp_path, monkeypatch):
  # Every worker of a cluster finds the records missing and prepares them;
  # the ones whose copy lands second get a DataError and read the winner's.
  source = tfx.write_idx_dir(tmp_path / "idx")
  records_dir = tmp_path / "records"
  real = prepare.make_records

  def lose_the_race(prepare_config):
    real(prepare_config)  # The other worker's copy.
    raise DataError(f"{records_dir}/mnist: another process wrote it meanwhile; kept that one")

  monkeypatch.setattr(prepare, "make_records", lose_the_race)
  said = []
  info = prepare.ensure_records(str(records_dir), "mnist", str(source), show_progress=False,
                                say=said.append)
  assert info == records.read_info(str(records_dir), "mnist")
  assert said[-1] == "Using the records of mnist that another process prepared."


def test_missing_records_are_prepared_from_idx_source_dir(tmp_path):
  source = tfx.write_idx_dir(tmp_path / "idx")
  records_dir = tmp_path / "records"
  said = []
  info = prepare.ensure_records(str(records_dir), "mnist", str(source), show_progress=False,
                                say=said.append)
  assert said == [f"Records of mnist not found in {records_dir}/; preparing them with "
                  f"make_records from {source}."]
  assert info == records.read_info(str(records_dir), "mnist")
  assert info["source"] == "idx"
  assert info["splits"]["train"]["count"] + info["splits"]["validation"]["count"] == \
      tfx.NUM_TRAIN
  # Present now: nothing more is prepared or said.
  assert prepare.ensure_records(str(records_dir), "mnist", say=said.append) == info
  assert len(said) == 1
