"""Extensions tab without a browser: who may install/switch extensions, the installed list with real git repos,
and saving the enabled state to the settings file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from modules.cmd_args import parse_args
from modules.options import Options
from modules.shared_options import options_templates
from modules.ui_extensions import (
    apply_enabled,
    check_updates,
    extension_access_allowed,
    extensions_table_html,
    install_from_url,
    list_installed,
    update_all,
)


def flags(*argv: str):
    return parse_args(list(argv), environ={})


@pytest.mark.parametrize(("argv", "allowed"), [
    ((), True),
    (("--server-name", "127.0.0.1"), True),
    (("--server-name", "localhost"), True),
    (("--server-name", "::1"), True),
    (("--listen",), False),
    (("--server-name", "0.0.0.0"), False),
    (("--server-name", "192.168.1.5"), False),
    (("--server-name", "myhost.example"), False),
    (("--share",), False),
    (("--listen", "--enable-insecure-extension-access"), True),
    (("--server-name", "0.0.0.0", "--enable-insecure-extension-access"), True),
])
def test_extension_access_by_flags(argv: tuple[str, ...], allowed: bool) -> None:
    ok, reason = extension_access_allowed(flags(*argv))
    assert ok is allowed
    if allowed:
        assert reason == ""
    else:
        assert "--enable-insecure-extension-access" in reason
        assert argv[0] in reason


def _git(folder: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_AUTHOR_DATE": "2024-03-01T12:00:00+00:00",
           "GIT_COMMITTER_DATE": "2024-03-01T12:00:00+00:00", "HOME": str(folder), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


@pytest.fixture
def extension_dirs(tmp_path: Path) -> tuple[Path, Path]:
    builtin, user = tmp_path / "builtin", tmp_path / "extensions"
    (builtin / "zeta-builtin").mkdir(parents=True)
    (builtin / "README.md").write_text("not an extension")
    repo = user / "sd-webui-demo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "demo.py").write_text("x = 1\n")
    _git(repo, "init", "-q", "-b", "dev")
    _git(repo, "remote", "add", "origin", "https://example.invalid/someone/sd-webui-demo.git")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    (user / "plain-folder").mkdir()
    (user / ".hidden").mkdir()
    return builtin, user


def context(extensions_dir: Path, *argv: str, opts: Options | None = None) -> SimpleNamespace:
    paths = SimpleNamespace(extensions_dir=extensions_dir, settings_file=extensions_dir.parent / "config.json")
    return SimpleNamespace(paths=paths, opts=opts or Options(options_templates), args=flags(*argv))


def test_listing_reads_folders_enabled_state_and_git_details(extension_dirs: tuple[Path, Path]) -> None:
    builtin, user = extension_dirs
    ctx = context(user)
    ctx.opts.set("disabled_extensions", ["plain-folder"])

    found = list_installed(ctx, builtin_dir=builtin)

    assert [(e.name, e.is_builtin, e.enabled) for e in found] == [
        ("zeta-builtin", True, True), ("plain-folder", False, False), ("sd-webui-demo", False, True)]
    demo = found[2]
    head = _git(user / "sd-webui-demo", "rev-parse", "HEAD")
    assert demo.remote == "https://example.invalid/someone/sd-webui-demo.git"
    assert demo.branch == "dev"
    assert demo.commit_hash == head and demo.version == head[:8]
    assert demo.commit_date == 1709294400

    table = extensions_table_html(found)
    assert table.count("<tr data-extension=") == 3
    assert head[:8] in table and "https://example.invalid/someone/sd-webui-demo.git" in table
    assert "2024-03-0" in table  # the commit date, in local time
    assert "zeta-builtin (built-in)" in table
    assert '<tr data-extension="plain-folder"><td>plain-folder</td><td>no</td><td></td>' in table


def test_table_says_why_an_enabled_extension_does_not_load(extension_dirs: tuple[Path, Path]) -> None:
    builtin, user = extension_dirs
    found = list_installed(context(user, "--disable-extra-extensions"), builtin_dir=builtin)
    table = extensions_table_html(found)
    assert "yes (not loaded: extra extensions are disabled by --disable-extra-extensions)" in table


def test_empty_list_says_so(tmp_path: Path) -> None:
    found = list_installed(context(tmp_path / "none"), builtin_dir=tmp_path / "none2")
    assert found == [] and "No extensions installed" in extensions_table_html(found)


def test_apply_saves_disabled_extensions(tmp_path: Path) -> None:
    opts = Options(options_templates)
    opts.set("disabled_extensions", ["gone-ext"])
    settings_file = tmp_path / "config.json"

    message = apply_enabled(opts, settings_file, ["a", "b", "c"], ["b"], flags())

    assert opts.disabled_extensions == ["gone-ext", "a", "c"]
    assert json.loads(settings_file.read_text(encoding="utf8"))["disabled_extensions"] == ["gone-ext", "a", "c"]
    assert "gone-ext, a, c" in message


def test_apply_is_refused_when_listening_on_the_network(tmp_path: Path) -> None:
    opts = Options(options_templates)
    settings_file = tmp_path / "config.json"
    message = apply_enabled(opts, settings_file, ["a"], [], flags("--listen"))
    assert "--enable-insecure-extension-access" in message
    assert opts.disabled_extensions == [] and not settings_file.exists()


def test_apply_reports_a_frozen_setting(tmp_path: Path) -> None:
    opts = Options(options_templates, frozen_keys=["disabled_extensions"])
    message = apply_enabled(opts, tmp_path / "config.json", ["a"], [], flags())
    assert message.startswith("Could not save") and "frozen" in message


def test_install_from_a_local_repository(extension_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """A real clone (from a local repository, no network) into the extensions folder, then a refused second one."""
    _, user = extension_dirs
    target_dir = tmp_path / "installed"
    ctx = context(target_dir)
    source = user / "sd-webui-demo"

    message = install_from_url(f" {source} ", "dev", "my-demo", ctx)

    assert message == f"Installed {source} into {target_dir / 'my-demo'}. Restart Atelier to load it."
    assert (target_dir / "my-demo" / "scripts" / "demo.py").read_text() == "x = 1\n"
    assert [e.name for e in list_installed(ctx, builtin_dir=tmp_path / "no-builtins")] == ["my-demo"]
    again = install_from_url(str(source), "", "my-demo", ctx)
    assert again.startswith(f"Installing {source} failed: An extension folder named 'my-demo' already exists")


def test_install_refuses_non_local_server_and_asks_for_a_url(tmp_path: Path) -> None:
    refused = install_from_url("https://example.invalid/e.git", "", "", context(tmp_path / "ext", "--listen"))
    assert "--enable-insecure-extension-access" in refused
    assert not (tmp_path / "ext").exists()
    assert install_from_url("  ", "", "", context(tmp_path / "ext")).startswith("Enter the URL")


def test_install_failure_is_a_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    message = install_from_url(f"file://{missing}", "", "x", context(tmp_path / "ext"))
    assert message.startswith(f"Installing file://{missing} failed: git clone")
    assert not (tmp_path / "ext" / "x").exists()


def test_check_for_updates_and_update_all(extension_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """Install from a local repository, commit upstream, then the buttons' functions report and fast-forward it."""
    _, user = extension_dirs
    source = user / "sd-webui-demo"
    ctx = context(tmp_path / "installed")
    no_builtins = tmp_path / "no-builtins"
    assert install_from_url(str(source), "dev", "demo", ctx).startswith("Installed")
    assert check_updates(ctx, no_builtins) == "demo: latest"
    assert update_all(ctx, no_builtins) == "Nothing to update."

    (source / "scripts" / "demo.py").write_text("x = 2\n")
    _git(source, "commit", "-q", "-am", "second")
    assert check_updates(ctx, no_builtins) == "demo: update available"
    assert update_all(context(tmp_path / "installed", "--listen"), no_builtins).startswith("Extension access is")
    assert update_all(ctx, no_builtins) == "Updated: demo. Restart the UI to load them."
    assert (tmp_path / "installed" / "demo" / "scripts" / "demo.py").read_text() == "x = 2\n"
