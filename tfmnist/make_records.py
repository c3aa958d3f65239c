"""`python -m tfmnist.make_records`: the command line in tfmnist/cli/make_records.py."""

from tfmnist.cli.make_records import run

if __name__ == "__main__":
  run()
