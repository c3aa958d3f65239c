"""Tests of tfmnist.flagfiles: flags that a later --flagfile overrides."""

from absl import flags

from tfmnist.cli import flagfiles


def test_overridden_reads_nested_flagfiles_and_each_flag_form(tmp_path):
  flag_values = flags.FlagValues()
  flags.DEFINE_integer("epochs", 1, "", flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "", flag_values=flag_values)
  flags.DEFINE_float("learning_rate", 0.1, "", flag_values=flag_values)
  flags.DEFINE_bool("export", True, "", flag_values=flag_values)
  inner = tmp_path / "inner.flags"
  inner.write_text("--noexport\n--seed=7\n")
  outer = tmp_path / "outer.flags"
  outer.write_text(f"# nested\n--epochs=3\n--flagfile={inner}\n")
  argv = ["train", "--epochs", "3", "--export", "--seed", "1", "--learning_rate=0.1",
          "--flagfile", str(outer), "--seed=2"]
  warnings = flagfiles.overridden(argv, flag_values)
  # "--epochs 3" is what the file says too; --seed=2 comes after the file.
  assert [w.split(" comes before ")[0] for w in warnings] == ["--export", "--seed=1"]
  assert f"--flagfile={outer}, which sets --noexport;" in warnings[0]
  assert "which sets --seed=7;" in warnings[1]
  assert flagfiles.overridden(["train", f"--flagfile={outer}", "--epochs=9"], flag_values) == []
