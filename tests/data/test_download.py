"""Tests of tfmnist.data.sources.download and the tfds fallback, against a local mirror.

The machine has no internet: every request goes to an HTTP server that the
`mirror` fixture starts on 127.0.0.1 and stops after the test.
"""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import struct
import threading
import time
import zipfile

import numpy as np
import pytest

from tfmnist.data import catalog as datasets
from tfmnist.data import prepare
from tfmnist.errors import DataError
from tfmnist.data.sources import download
from tfmnist.data.sources import tfds as tfds_source

# Real MNIST lives beside the repository and is only ever copied into tmp_path.
MNIST_DIR = os.environ.get("TFMNIST_REAL_MNIST_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "mnist"))
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TRAIN_COUNT = 22_699  # The shared train files are a subset of the official 60,000.

needs_mnist = pytest.mark.skipif(not os.path.isdir(MNIST_DIR),
                                 reason=f"{MNIST_DIR} (real MNIST files) is absent")


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
  """Serves the mirror folder and records every requested path on the server."""

  def do_GET(self):
    self.server.requests.append(self.path)
    super().do_GET()

  def log_message(self, *args):  # Keep the test output clean.
    pass


@dataclasses.dataclass
class Mirror:
  root: str
  url: str
  requests: list

  def add(self, relative_path, data):
    """Serves `data` (bytes) at `<url>/<relative_path>`."""
    path = os.path.join(self.root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
  """No proxy (traffic stays on 127.0.0.1), no inherited mirror, a private cache."""
  for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
               "ALL_PROXY", download.BASE_URL_ENV):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
  monkeypatch.setenv(download.CACHE_DIR_ENV, str(tmp_path / "default-cache"))


@pytest.fixture
def mirror(tmp_path):
  """An HTTP server on a free 127.0.0.1 port serving tmp_path/mirror."""
  root = tmp_path / "mirror"
  root.mkdir()
  handler = functools.partial(_CountingHandler, directory=str(root))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  server.requests = []
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                            daemon=True)
  thread.start()
  try:
    yield Mirror(str(root), f"http://127.0.0.1:{server.server_address[1]}", server.requests)
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port():
  """A 127.0.0.1 port bound but not listening: connections are refused at once."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]


def _sha256(data):
  return hashlib.sha256(data).hexdigest()


def _idx_bytes(array):
  """Gzip-compressed IDX file of a uint8 array with 1 or 3 dimensions."""
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
  header += struct.pack(f">{array.ndim}I", *array.shape)
  return gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _cache_contents(cache_dir):
  return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


def _serve_shared_mnist(mirror, monkeypatch):
  """Serves the four shared MNIST files as the mirror's mnist/ and returns the spec."""
  files = []
  for remote in datasets.CATALOG["mnist"].files:
    with open(os.path.join(MNIST_DIR, remote.name), "rb") as f:
      data = f.read()
    mirror.add(f"mnist/{remote.name}", data)
    files.append(dataclasses.replace(remote, sha256=_sha256(data), size_bytes=len(data)))
  # The shared train files hold 22,699 of the 60,000 official images, so their
  # checksums differ from the catalog's; the spec is patched to the served
  # files' checksums (the test files keep the official ones).
  spec = dataclasses.replace(datasets.CATALOG["mnist"], files=tuple(files))
  monkeypatch.setitem(datasets.CATALOG, "mnist", spec)
  return spec


# --- fetch: checksums and the cache -------------------------------------------


@needs_mnist
def test_fetch_accepts_official_mnist_test_files_and_then_uses_the_cache(mirror, tmp_path):
  spec = datasets.CATALOG["mnist"]
  catalog_sha = {f.name: f.sha256 for f in spec.files}
  cache_dir = tmp_path / "cache"
  for name in MNIST_TEST_FILES:
    os.makedirs(os.path.join(mirror.root, "mnist"), exist_ok=True)
    shutil.copy(os.path.join(MNIST_DIR, name), os.path.join(mirror.root, "mnist", name))

  def fetch_all():
    for name in MNIST_TEST_FILES:
      dest = str(cache_dir / name)
      assert download.fetch(download.file_url(spec, name, mirror.url), dest,
                            catalog_sha[name], show_progress=False) == dest

  fetch_all()
  assert mirror.requests == [f"/mnist/{name}" for name in MNIST_TEST_FILES]
  assert _cache_contents(cache_dir) == sorted(MNIST_TEST_FILES)
  for name in MNIST_TEST_FILES:
    with open(cache_dir / name, "rb") as got, open(os.path.join(MNIST_DIR, name), "rb") as want:
      assert got.read() == want.read()

  fetch_all()
  assert len(mirror.requests) == len(MNIST_TEST_FILES)  # Served from the cache.


@pytest.mark.parametrize("corrupt", [
    lambda data: data[:10] + bytes([data[10] ^ 0x01]) + data[11:],
    lambda data: data[:len(data) // 2],
], ids=["byte_flipped", "truncated"])
def test_fetch_rejects_a_corrupt_download_and_keeps_nothing(mirror, tmp_path, corrupt):
  official = bytes(range(256)) * 40
  mirror.add("file.gz", corrupt(official))
  cache_dir = tmp_path / "cache"
  with pytest.raises(DataError, match="checksum") as e:
    download.fetch(f"{mirror.url}/file.gz", str(cache_dir / "file.gz"), _sha256(official),
                   show_progress=False)
  assert f"{mirror.url}/file.gz" in str(e.value)
  assert _cache_contents(cache_dir) == []  # Neither file.gz nor file.gz.part-<pid>.


def test_fetch_downloads_again_when_the_cached_file_has_a_wrong_checksum(mirror, tmp_path):
  official = b"official contents" * 100
  mirror.add("file.gz", official)
  dest = tmp_path / "cache" / "file.gz"
  dest.parent.mkdir()
  dest.write_bytes(b"stale or damaged")
  download.fetch(f"{mirror.url}/file.gz", str(dest), _sha256(official), show_progress=False)
  assert mirror.requests == ["/file.gz"]
  assert dest.read_bytes() == official


def test_fetch_drops_a_bad_cached_file_even_when_the_new_download_fails(mirror, tmp_path):
  mirror.add("file.gz", b"corrupt on the mirror too")
  dest = tmp_path / "cache" / "file.gz"
  dest.parent.mkdir()
  dest.write_bytes(b"stale or damaged")
  with pytest.raises(DataError, match="checksum"):
    download.fetch(f"{mirror.url}/file.gz", str(dest), _sha256(b"official"),
                   show_progress=False)
  assert _cache_contents(dest.parent) == []


# --- fetch: network failures --------------------------------------------------


def test_fetch_reports_http_404_with_the_url(mirror, tmp_path):
  url = f"{mirror.url}/mnist/missing.gz"
  with pytest.raises(DataError, match="HTTP 404") as e:
    download.fetch(url, str(tmp_path / "cache" / "missing.gz"), "0" * 64,
                   show_progress=False)
  assert url in str(e.value)
  assert _cache_contents(tmp_path / "cache") == []


def test_fetch_reports_a_refused_connection_quickly(closed_port, tmp_path):
  url = f"http://127.0.0.1:{closed_port}/mnist/file.gz"
  start = time.perf_counter()
  with pytest.raises(DataError, match="download failed") as e:
    download.fetch(url, str(tmp_path / "cache" / "file.gz"), "0" * 64, timeout_seconds=5,
                   show_progress=False)
  assert time.perf_counter() - start < 3
  assert url in str(e.value) and download.BASE_URL_ENV in str(e.value)
  assert _cache_contents(tmp_path / "cache") == []


def test_fetch_reports_a_url_without_scheme_as_data_error(tmp_path):
  with pytest.raises(DataError, match="mirror/mnist/file.gz"):
    download.fetch("mirror/mnist/file.gz", str(tmp_path / "file.gz"), "0" * 64,
                   show_progress=False)


def test_fetch_reports_a_server_that_does_not_speak_http_in_one_line(tmp_path):
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def reply_garbage():
      conn, _ = listener.accept()
      with conn:
        conn.recv(4096)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    thread = threading.Thread(target=reply_garbage, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/file.gz"
    with pytest.raises(DataError, match="SSH-2.0") as e:
      download.fetch(url, str(tmp_path / "file.gz"), "0" * 64, timeout_seconds=5,
                     show_progress=False)
    thread.join(timeout=5)
  assert "\n" not in str(e.value)


# --- make_records and load_source over a mirror -------------------------------


@needs_mnist
def test_make_records_downloads_mnist_from_the_mirror_flag(mirror, monkeypatch, tmp_path):
  _serve_shared_mnist(mirror, monkeypatch)
  config = prepare.PrepareConfig(
      dataset="mnist", source="url", download_base_url=mirror.url,
      cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "records"),
      num_shards=2, show_progress=False)
  folder, info = prepare.make_records(config)

  with open(os.path.join(folder, "info.json")) as f:
    written = json.load(f)
  counts = {name: s["count"] for name, s in written["splits"].items()}
  assert counts["train"] + counts["validation"] == MNIST_TRAIN_COUNT
  assert counts["test"] == 10_000
  assert written["source"] == info["source"] == "url"
  assert sorted(mirror.requests) == sorted(
      f"/mnist/{f.name}" for f in datasets.CATALOG["mnist"].files)
  cached = {os.path.basename(f["path"]) for f in written["source_files"]}
  assert cached == {f.name for f in datasets.CATALOG["mnist"].files}


@needs_mnist
def test_mirror_environment_variable_works_like_the_flag(mirror, monkeypatch, tmp_path):
  _serve_shared_mnist(mirror, monkeypatch)
  monkeypatch.setenv(download.BASE_URL_ENV, mirror.url)
  config = prepare.PrepareConfig(dataset="mnist", cache_dir=str(tmp_path / "cache"),
                                 show_progress=False)
  assert prepare.infer_source(config) == "url"
  splits = prepare.load_source(config, datasets.get_spec("mnist"))
  assert {k: len(v) for k, v in splits.items()} == {"train": MNIST_TRAIN_COUNT,
                                                    "test": 10_000}
  assert len(mirror.requests) == 4


def test_without_mirror_the_default_source_is_tfds():
  assert prepare.infer_source(prepare.PrepareConfig(dataset="mnist")) == "tfds"


# --- tensorflow-datasets fallback ---------------------------------------------


def _tfds_offline(spec, *args, **kwargs):
  raise DataError(f"{spec.base_url}: unreachable, tensorflow-datasets cannot download")


@needs_mnist
def test_tfds_failure_falls_back_to_the_official_files_on_the_mirror(
    mirror, monkeypatch, tmp_path):
  _serve_shared_mnist(mirror, monkeypatch)
  monkeypatch.setattr(tfds_source, "load_tfds", _tfds_offline)
  config = prepare.PrepareConfig(dataset="mnist", source="tfds", download_base_url=mirror.url,
                                 cache_dir=str(tmp_path / "cache"), show_progress=False)
  splits = prepare.load_source(config, datasets.get_spec("mnist"))
  assert {k: len(v) for k, v in splits.items()} == {"train": MNIST_TRAIN_COUNT,
                                                    "test": 10_000}
  assert len(mirror.requests) == 4


def test_tfds_failure_without_official_files_is_reported(monkeypatch):
  monkeypatch.setattr(tfds_source, "load_tfds", _tfds_offline)
  spec = datasets.get_spec("digit_recognizer")
  with pytest.raises(DataError, match="unreachable"):
    prepare.load_source(prepare.PrepareConfig(dataset=spec.name, source="tfds"), spec)


def test_host_reachable_is_false_fast_for_a_closed_port(closed_port):
  start = time.perf_counter()
  assert not tfds_source.host_reachable(f"http://127.0.0.1:{closed_port}/mnist/",
                                        timeout_seconds=5)
  assert time.perf_counter() - start < 2


def test_host_reachable_is_true_for_a_live_server(mirror):
  assert tfds_source.host_reachable(f"{mirror.url}/mnist/", timeout_seconds=5)
  assert mirror.requests == []  # A TCP connection only, no HTTP request.


# --- EMNIST's zip archive -----------------------------------------------------


def test_download_official_reads_the_emnist_zip_and_transposes(mirror, tmp_path):
  rng = np.random.default_rng(0)
  stored = {"train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
            "test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)}
  labels = {"train": np.array([0, 1, 2, 7, 8, 9], np.uint8),
            "test": np.array([5, 3, 0], np.uint8)}
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    for split in ("train", "test"):
      for prefix in ("emnist-digits-", "emnist-letters-"):  # Only digits must be read.
        archive.writestr(f"gzip/{prefix}{split}-images-idx3-ubyte.gz",
                         _idx_bytes(stored[split]))
        archive.writestr(f"gzip/{prefix}{split}-labels-idx1-ubyte.gz",
                         _idx_bytes(labels[split] + (prefix == "emnist-letters-")))
  data = buffer.getvalue()
  mirror.add("emnist_digits/gzip.zip", data)
  spec = datasets.get_spec("emnist_digits")
  spec = dataclasses.replace(spec, files=(
      dataclasses.replace(spec.files[0], sha256=_sha256(data), size_bytes=len(data)),))

  splits = download.download_official(spec, mirror.url, str(tmp_path / "cache"),
                                      show_progress=False)
  assert mirror.requests == ["/emnist_digits/gzip.zip"]
  assert set(splits) == {"train", "test"}
  for split in ("train", "test"):
    np.testing.assert_array_equal(splits[split].images, stored[split].transpose(0, 2, 1))
    assert not np.array_equal(splits[split].images, stored[split])
    np.testing.assert_array_equal(splits[split].labels, labels[split])
  assert os.path.isfile(tmp_path / "cache" / "emnist_digits" / "gzip.zip")
