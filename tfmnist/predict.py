"""`python -m tfmnist.predict`: the command line in tfmnist/cli/predict.py."""

from tfmnist.cli.predict import run

if __name__ == "__main__":
  run()
