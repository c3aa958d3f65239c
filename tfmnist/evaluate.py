"""`python -m tfmnist.evaluate`: the command line in tfmnist/cli/evaluate.py."""

from tfmnist.cli.evaluate import run

if __name__ == "__main__":
  run()
