"""Tests for launch.py: the requirements stamp, the test-argument split, and A1111's `launch` helpers."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import launch


def write_reqs(folder: Path) -> Path:
    (folder / "base.txt").write_text("numpy\n")
    top = folder / "top.txt"
    top.write_text("-r base.txt\npytest\n")
    return top


def test_stamp_follows_included_files(tmp_path: Path):
    top = write_reqs(tmp_path)
    assert {p.name for p in launch.requirement_files(top)} == {"top.txt", "base.txt"}
    first = launch.requirements_stamp(top)
    assert launch.requirements_stamp(top) == first
    (tmp_path / "base.txt").write_text("numpy==1.26.4\n")
    assert launch.requirements_stamp(top) != first


def test_install_is_skipped_when_the_stamp_matches(tmp_path: Path, monkeypatch):
    top = write_reqs(tmp_path)
    monkeypatch.setattr(launch, "VENV", tmp_path)
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    launch.ensure_requirements(top, force=False)
    assert len(calls) == 1 and calls[0][-1] == str(top)
    launch.ensure_requirements(top, force=False)
    assert len(calls) == 1, "a matching stamp must skip pip"
    launch.ensure_requirements(top, force=True)
    assert len(calls) == 2, "--reinstall must run pip again"
    (tmp_path / "base.txt").write_text("numpy<2\n")
    launch.ensure_requirements(top, force=False)
    assert len(calls) == 3, "a changed requirements file must run pip again"


def test_failed_install_stops_with_a_message(tmp_path: Path, monkeypatch):
    top = write_reqs(tmp_path)
    monkeypatch.setattr(launch, "VENV", tmp_path)

    class Failed:
        returncode = 1

    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, **kw: Failed())
    with pytest.raises(SystemExit, match="failed"):
        launch.ensure_requirements(top, force=False)
    assert not launch.stamp_file(top).exists()


def test_run_tests_arguments_are_split():
    assert launch.split_test_args(["--skip-install", "--run-tests", "-k", "x"]) == (["--skip-install"], ["-k", "x"])
    assert launch.split_test_args(["--api"]) is None


def test_a1111_launch_helpers_are_served():
    module = importlib.import_module("launch")
    assert module.is_installed("torch") is True
    assert module.is_installed("surely-not-a-package-xyz") is False
    assert module.run("echo hello", live=False).strip() == "hello"
    with pytest.raises(RuntimeError, match="Error code"):
        module.run("exit 3", live=False)
    assert callable(module.run_pip) and callable(module.git_clone)


def test_test_mode_installs_test_requirements_and_no_deps_oracles(monkeypatch):
    calls = []
    monkeypatch.setattr(launch, "ensure_requirements", lambda top, **kw: calls.append((top.name, kw)))
    launch.install_requirements(["--run-tests"], force=False)
    assert calls == [("requirements-test.txt", {"force": False}),
                     ("requirements-test-nodeps.txt", {"force": False, "no_deps": True})]
    calls.clear()
    launch.install_requirements(["--api"], force=True)
    assert calls == [("requirements.txt", {"force": True})]
