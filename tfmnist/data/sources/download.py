"""Downloads of the official dataset files, verified by SHA-256 and cached.

The base URL can point at an internal mirror through `download_base_url` or
the TFMNIST_DOWNLOAD_BASE_URL environment variable; a mirror holds the
official files under `<base>/<dataset>/<file name>`. Files land in a cache
folder (TFMNIST_CACHE_DIR, default ~/.cache/tfmnist/downloads) and are kept
only when their checksum matches.
"""

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zipfile

from absl import logging

from tfmnist.errors import DataError, DownloadError
from tfmnist.progress import Progress
from tfmnist.data.sources import idx
from tfmnist.files import sha256_file

BASE_URL_ENV = "TFMNIST_DOWNLOAD_BASE_URL"
CACHE_DIR_ENV = "TFMNIST_CACHE_DIR"
_CHUNK_BYTES = 1 << 16


def default_cache_dir():
  return os.environ.get(CACHE_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "tfmnist", "downloads")


def mirror_base_url(flag_value=None):
  """The mirror base URL from the flag, else the environment, else None."""
  return flag_value or os.environ.get(BASE_URL_ENV) or None


def fetch(url, dest, sha256, timeout_seconds=60, show_progress=True):
  """Downloads `url` to `dest` unless a verified copy is already there.

  The file is streamed to a temporary name, hashed on the way, and renamed to
  `dest` only when its SHA-256 equals `sha256`; a mismatch deletes it.
  (keras.utils.get_file checks a hash too, but it has no timeout: a mirror
  that stops answering would hang the command for good.)

  Returns:
    `dest`.
  """
  if os.path.exists(dest):
    if sha256_file(dest) == sha256:
      logging.info("Using cached %s", dest)
      return dest
    logging.warning("Cached %s has the wrong checksum; downloading again", dest)
    os.remove(dest)  # The cache keeps verified files only, even if this download fails.
  os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
  partial = f"{dest}.part-{os.getpid()}"
  digest = hashlib.sha256()
  try:
    with urllib.request.urlopen(url, timeout=timeout_seconds) as response, \
        open(partial, "wb") as out:
      size = int(response.headers.get("Content-Length") or 0)
      bar = Progress(size, "B", desc=f"download {os.path.basename(dest)}",
                     enabled=show_progress and size > 0)
      for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
        digest.update(chunk)
        out.write(chunk)
        bar.update(len(chunk))
    if digest.hexdigest() != sha256:
      raise DataError(
          f"{url}: checksum mismatch (sha256 {digest.hexdigest()}, expected {sha256}); "
          "the download is corrupt or not the official file and was discarded")
    os.replace(partial, dest)
  except urllib.error.HTTPError as e:
    raise DownloadError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
  # ValueError: a URL without a scheme; HTTPException: a reply that is not HTTP.
  except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
    reason = str(getattr(e, "reason", e)).strip()  # BadStatusLine ends in a newline.
    raise DownloadError(
        f"{url}: download failed ({reason})", "offline machines can use local files "
        f"(source idx, csv or npz) or a mirror (download_base_url or ${BASE_URL_ENV})"
    ) from None
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return dest


def file_url(spec, name, base_url=None):
  """URL of one official file: on the mirror when given, else the origin."""
  if base_url:
    return f"{base_url.rstrip('/')}/{spec.name}/{name}"
  return spec.base_url + name


def download_official(spec, base_url=None, cache_dir=None, show_progress=True):
  """Fetches and decodes the official files of `spec`.

  Returns:
    {split: RawSplit}.
  """
  if not spec.files:
    raise DataError(
        f"dataset {spec.name!r} has no official download; give its files with "
        "source csv, idx or npz")
  cache_dir = os.path.join(cache_dir or default_cache_dir(), spec.name)
  paths = {}
  for remote in spec.files:
    paths[remote.name] = fetch(file_url(spec, remote.name, base_url),
                               os.path.join(cache_dir, remote.name), remote.sha256,
                               show_progress=show_progress)
  if len(spec.files) == 1 and spec.files[0].name.endswith(".zip"):
    return _splits_from_zip(paths[spec.files[0].name], spec)
  return idx.load_idx_dir(cache_dir, spec)


def _splits_from_zip(path, spec):
  """Reads the IDX members of `spec` out of a zip archive (EMNIST's gzip.zip)."""
  try:
    with zipfile.ZipFile(path) as archive:
      pairs = idx.find_idx_files(archive.namelist(), spec.idx_prefix)
      if not pairs:
        raise DataError(f"{path}: no {spec.idx_prefix}* IDX members")
      splits = {}
      for split, (image_name, label_name) in pairs.items():
        splits[split] = idx.decode_split(
            archive.read(image_name), archive.read(label_name),
            f"{path}:{image_name}", f"{path}:{label_name}", spec)
        splits[split].files = (path,)
      return splits
  except zipfile.BadZipFile as e:
    raise DataError(f"{path}: not a readable zip archive ({e})") from None
