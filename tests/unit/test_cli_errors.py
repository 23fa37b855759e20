"""What the command line says when the user gets something wrong: one line naming the path, option
or key at fault and exit 1 (or click's usage error, exit 2); bugs keep their traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from genloop.cli import _handled, main

GENLOOP = str(Path(sys.executable).with_name("genloop"))


def genloop(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([GENLOOP, *args], cwd=cwd, capture_output=True, text=True, errors="backslashreplace")


def test_missing_explicit_params_file_fails_naming_it(tmp_path):
    proc = genloop("--params", "nope.yaml", "collect", cwd=tmp_path)
    assert proc.returncode != 0 and "nope.yaml" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_missing_root_fails_naming_it(tmp_path):
    proc = genloop("--root", str(tmp_path / "gone"), "collect", cwd=tmp_path)
    assert proc.returncode != 0 and f"{tmp_path / 'gone'}" in proc.stderr and "does not exist" in proc.stderr


def test_absent_default_params_file_says_the_defaults_are_used(tmp_path):
    proc = genloop("--root", str(tmp_path), "collect", "--source", "nothing", cwd=tmp_path)
    assert f"{tmp_path / 'params.yaml'} not found; using the default parameters" in proc.stderr


def test_binary_params_file_and_non_utf8_path_are_named_in_one_line(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)))
    proc = genloop("--params", str(binary), "collect", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"error: {binary}: not a text (UTF-8) YAML file (byte 128 is 0x80)")

    odd = os.fsencode(tmp_path) + b"/p\xff.yaml"
    Path(os.fsdecode(odd)).write_text("seed: {\n")
    proc = subprocess.run([GENLOOP.encode(), b"--params", odd, b"collect"], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert b"p\\xff.yaml: not valid YAML" in proc.stderr


def test_set_typo_blames_the_option_and_suggests_keys(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    proc = genloop("-S", "train.vae.imagez=3", "collect", cwd=tmp_path)
    assert proc.returncode == 1
    assert "-S train.vae.imagez: unknown key train.vae.imagez; did you mean train.vae.images" in proc.stderr
    assert "params.yaml" not in proc.stderr and "Extra inputs" not in proc.stderr


def test_a_set_key_given_twice_is_refused_naming_it(tmp_path):
    twice = genloop("-S", "train.vae.lr=0.1", "-S", "train.vae.lr=0.2", "collect", cwd=tmp_path)
    assert twice.returncode == 2 and "train.vae.lr is given twice" in twice.stderr, twice.stderr
    inside = genloop("-S", "train.vae={lr: 0.1, lr: 0.2}", "collect", cwd=tmp_path)
    assert inside.returncode == 2 and "key 'lr' is given twice" in inside.stderr, inside.stderr
    spelled_twice = genloop("-S", "train.vae.lr=0.1", "-S", "train.vae={lr: 0.2}", "collect", cwd=tmp_path)
    assert spelled_twice.returncode == 2 and "train.vae.lr is given twice" in spelled_twice.stderr
    for proc in (twice, inside, spelled_twice):
        assert "Traceback" not in proc.stderr and not (tmp_path / "data").exists()


def test_sweep_space_without_equals_names_space_and_its_form(tmp_path):
    proc = genloop("sweep", "--space", "foo", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--space" in proc.stderr and "--set" not in proc.stderr and "KEY=VALUES" in proc.stderr


def test_user_errors_are_one_line_and_bugs_keep_their_traceback():
    import click

    from genloop.errors import GenloopError

    @click.command()
    @click.argument("kind")
    @_handled
    def fails(kind: str) -> None:
        raise (GenloopError if kind == "user" else ValueError)(f"{kind} problem")

    user = CliRunner().invoke(fails, ["user"])
    assert user.exit_code == 1 and user.output.strip() == "error: user problem"
    bug = CliRunner().invoke(fails, ["bug"])
    assert type(bug.exception) is ValueError and str(bug.exception) == "bug problem"  # not swallowed into a one-liner
    assert bug.exit_code == 1 and "error:" not in bug.output


def test_help_stays_light():
    """errors.py and lock.py must not pull heavy libraries into every command."""
    code = ("import sys, genloop.errors, genloop.io.lock, genloop.cli; "
            "print(sorted(m for m in ('torch', 'pandas', 'prefect', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_wait_option_is_documented():
    out = CliRunner().invoke(main, ["--help"]).output
    assert "--wait SECONDS" in out
