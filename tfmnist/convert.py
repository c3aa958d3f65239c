"""`python -m tfmnist.convert`: the command line in tfmnist/cli/convert.py."""

from tfmnist.cli.convert import run

if __name__ == "__main__":
  run()
