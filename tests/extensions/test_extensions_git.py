"""Installing and updating extensions with real git: a local bare repository stands in for GitHub."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from modules import extensions
from modules.extensions import ExtensionError
from tests.extensions.conftest import FIXTURES, ExtEnv


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Commits need an author; the user's git configuration must not matter."""
    for key in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{key}_NAME", "Atelier Test")
        monkeypatch.setenv(f"GIT_{key}_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


class Upstream:
    """A working copy of the fixture extension pushed to a bare repository ``test_ext.git``."""

    def __init__(self, root: Path) -> None:
        self.work = root / "work"
        self.bare = root / "test_ext.git"
        shutil.copytree(FIXTURES / "test_ext", self.work, ignore=shutil.ignore_patterns("__pycache__", "*.marker"))
        git(root, "init", "--quiet", "--bare", "-b", "main", str(self.bare))
        git(self.work, "init", "--quiet", "-b", "main")
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "-m", "first")
        git(self.work, "remote", "add", "origin", str(self.bare))
        git(self.work, "push", "--quiet", "origin", "main")

    def commit(self, message: str) -> str:
        (self.work / "CHANGES.md").write_text(message)
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "-m", message)
        git(self.work, "push", "--quiet", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")

    @property
    def head(self) -> str:
        return git(self.bare, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream")


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".install-")]


def test_install_from_bare_repo_runs_install_py(ext_env: ExtEnv, upstream: Upstream) -> None:
    ext = extensions.install_extension(str(upstream.bare), ext_env.paths)
    target = ext_env.paths.extensions_dir / "test_ext"
    assert Path(ext.path) == target and ext.name == "test_ext" and not ext.is_builtin
    assert (target / ".git").is_dir() and (target / "scripts" / "test_script.py").is_file()
    assert (target / "installed.marker").read_text() == "pytest installed: True\n"
    assert leftovers(ext_env.paths.extensions_dir) == []
    assert not ext.have_info_from_repo, "git info is read lazily"
    assert ext.remote == str(upstream.bare) and ext.branch == "main"
    assert ext.commit_hash == upstream.head and ext.version == upstream.head[:8]
    assert isinstance(ext.commit_date, int) and ext.commit_date > 1_600_000_000
    assert ext.to_dict() == {"name": "test_ext", "remote": str(upstream.bare), "branch": "main",
                             "commit_hash": upstream.head, "commit_date": ext.commit_date,
                             "version": upstream.head[:8], "enabled": True}
    listed = extensions.find_extension(ext_env.list(), "test_ext")
    assert listed is not None and listed.commit_hash == upstream.head


def test_install_refusals_leave_nothing_behind(ext_env: ExtEnv, upstream: Upstream) -> None:
    extensions.install_extension(str(upstream.bare), ext_env.paths)
    with pytest.raises(ExtensionError, match="already exists"):
        extensions.install_extension(str(upstream.bare), ext_env.paths)
    with pytest.raises(ExtensionError, match="already installed as 'test_ext'"):
        extensions.install_extension(str(upstream.bare), ext_env.paths, dirname="again")
    for bad in ("../escape", ".hidden", "a/b"):
        with pytest.raises(ExtensionError, match="not a usable folder name"):
            extensions.install_extension(str(upstream.bare), ext_env.paths, dirname=bad)
    with pytest.raises(ExtensionError, match="git clone of .* failed") as err:
        extensions.install_extension(f"file://{upstream.bare.parent}/missing.git", ext_env.paths)
    assert err.value.status_code == 400 and err.value.hint
    with pytest.raises(ExtensionError, match="No extension URL"):
        extensions.install_extension("  ", ext_env.paths)
    assert sorted(p.name for p in ext_env.paths.extensions_dir.iterdir()) == ["test_ext"]


def test_install_file_url_branch_and_dirname(ext_env: ExtEnv, upstream: Upstream) -> None:
    git(upstream.work, "checkout", "--quiet", "-b", "feature")
    feature = upstream.commit("feature work")
    git(upstream.work, "push", "--quiet", "origin", "feature")
    ext = extensions.install_extension(f"file://{upstream.bare}", ext_env.paths, branch="feature", dirname="MyExt")
    assert Path(ext.path).name == "MyExt" and ext.name == "myext"
    assert ext.branch == "feature" and ext.commit_hash == feature


def test_check_for_updates_and_fast_forward(ext_env: ExtEnv, upstream: Upstream) -> None:
    ext = extensions.install_extension(str(upstream.bare), ext_env.paths)
    first = ext.commit_hash
    assert extensions.check_for_updates(ext) is False and ext.status == "latest" and not ext.can_update
    newer = upstream.commit("second")
    assert extensions.check_for_updates(ext) is True and ext.status == "behind" and ext.can_update
    assert ext.commit_hash == first, "checking does not change the working copy"
    assert extensions.update_extension(ext) is True
    assert ext.commit_hash == newer and (Path(ext.path) / "CHANGES.md").read_text() == "second"
    assert extensions.check_for_updates(ext) is False and ext.status == "latest"
    assert extensions.update_extension(ext) is False


def test_update_refuses_diverged_copy_and_non_clones(ext_env: ExtEnv, upstream: Upstream) -> None:
    ext = extensions.install_extension(str(upstream.bare), ext_env.paths)
    (Path(ext.path) / "local.txt").write_text("mine")
    git(Path(ext.path), "add", "-A")
    git(Path(ext.path), "commit", "--quiet", "-m", "local commit")
    upstream.commit("upstream commit")
    assert extensions.check_for_updates(ext) is True
    with pytest.raises(ExtensionError, match="cannot be fast-forwarded"):
        extensions.update_extension(ext)
    plain = extensions.Extension("plain", ext_env.make("plain"))
    assert extensions.check_for_updates(plain) is False and plain.status == "unknown"
    assert plain.remote is None and plain.version == ""
    with pytest.raises(ExtensionError, match="not a git clone"):
        extensions.update_extension(plain)


def test_missing_git_is_a_clear_error(ext_env: ExtEnv, upstream: Upstream, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ExtensionError, match="git is not installed or not on PATH"):
        extensions.install_extension(str(upstream.bare), ext_env.paths)
    assert list(ext_env.paths.extensions_dir.iterdir()) == []
