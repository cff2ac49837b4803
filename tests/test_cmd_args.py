"""Tests for modules/cmd_args.py: A1111 flag names and defaults, COMMANDLINE_ARGS, errors with suggestions."""

from __future__ import annotations

import logging
import subprocess

import pytest

from modules import cmd_args

A1111_FLAGS = (
    "--listen --port --server-name --api --nowebui --api-auth --gradio-auth --gradio-auth-path --data-dir --models-dir "
    "--ckpt --ckpt-dir --vae-dir --vae-path --embeddings-dir --lora-dir --no-half --no-half-vae --precision --medvram "
    "--lowvram --opt-sdp-attention --opt-channelslast --use-cpu --device-id --skip-torch-cuda-test --skip-install "
    "--disable-all-extensions --disable-extra-extensions --enable-insecure-extension-access --disable-safe-unpickle "
    "--no-hashing --no-download-sd-model --ui-settings-file --freeze-settings --autolaunch --theme --loglevel "
    "--cors-allow-origins --tls-keyfile --tls-certfile --subpath --compile"
).split()


def test_every_required_flag_exists():
    known = set(cmd_args.build_parser().known_flags())
    missing = [f for f in A1111_FLAGS if f not in known]
    assert missing == []


def test_defaults_match_a1111():
    args = cmd_args.parse_args([], environ={})
    assert args.port is None and args.listen is False and args.api is False and args.nowebui is False
    assert args.precision == "autocast" and args.use_cpu == [] and args.timeout_keep_alive == 30
    assert args.disable_extension_access is False


def test_values_are_parsed():
    args = cmd_args.parse_args(["--port", "7000", "--use-cpu", "all", "sd", "--precision", "full",
                                "--api-auth", "a:b", "--loglevel", "debug"], environ={})
    assert args.port == 7000 and args.use_cpu == ["all", "sd"] and args.precision == "full"
    assert args.api_auth == "a:b" and args.loglevel == "DEBUG"


def test_commandline_args_env_is_appended():
    args = cmd_args.parse_args(["--api"], environ={"COMMANDLINE_ARGS": "--listen --port 9000 --ckpt 'my model.ckpt'"})
    assert args.api and args.listen and args.port == 9000 and args.ckpt == "my model.ckpt"


def test_listen_disables_extension_access_unless_insecure_allowed():
    assert cmd_args.parse_args(["--listen"], environ={}).disable_extension_access is True
    args = cmd_args.parse_args(["--listen", "--enable-insecure-extension-access"], environ={})
    assert args.disable_extension_access is False


def test_unknown_flag_exits_2_with_near_matches(capsys):
    with pytest.raises(SystemExit) as e:
        cmd_args.parse_args(["--lisen"], environ={})
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--lisen" in err and "--listen" in err


def test_invalid_choice_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        cmd_args.parse_args(["--precision", "double"], environ={})
    assert e.value.code == 2
    assert "precision" in capsys.readouterr().err


def test_legacy_flags_are_accepted_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING):
        args = cmd_args.parse_args(["--always-batch-cond-uncond", "--max-batch-count", "16"], environ={})
    assert args.always_batch_cond_uncond is True
    assert "--always-batch-cond-uncond" in caplog.text and "no effect" in caplog.text


def test_preload_hook_adds_a_flag_before_parsing():
    def preload(parser):
        parser.add_argument("--my-extension-dir", type=str, default="x")

    args = cmd_args.parse_args(["--my-extension-dir", "y"], environ={}, preload_hooks=[preload])
    assert args.my_extension_dir == "y"


def test_launch_help_lists_flag_groups(root, python):
    out = subprocess.run([python, "launch.py", "--skip-install", "--help"], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    for group in ("server:", "paths:", "performance and precision:", "extensions:", "--nowebui", "--compile"):
        assert group in out.stdout


def test_launch_bogus_flag_exits_2_naming_near_matches(root, python):
    out = subprocess.run([python, "launch.py", "--skip-install", "--bogus", "--nowebu"], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--bogus" in out.stderr and "--nowebui" in out.stderr
