"""`python -m tfmnist.train`: the command line in tfmnist/cli/train.py."""

from tfmnist.cli.train import run

if __name__ == "__main__":
  run()
