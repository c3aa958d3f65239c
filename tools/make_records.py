#!/usr/bin/env python3
"""Command-line entry: converts a dataset into sharded TFRecords.

See `python tools/make_records.py --help`; the logic lives in tfmnist.data.prepare.
"""

from tfmnist.cli import make_records

if __name__ == "__main__":
  make_records.run()
