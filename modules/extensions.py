"""Extension folders: discovery, enabled state, ``metadata.ini``, git info, install/update, assets and preload hooks.

A1111's ``modules.extensions`` surface: an :class:`Extension` per folder of the built-in ``extensions/`` directory and
of ``<data-dir>/extensions``; names are the lower-case folder names. Which extensions load follows the settings
``disabled_extensions`` / ``disable_all_extensions`` (none, extra, all) and the flags ``--disable-all-extensions`` /
``--disable-extra-extensions``; an extension whose ``Requires`` is not met is left out with a logged reason.

When there is no ``--data-dir`` both folders are the same (``<repo>/extensions``); there a folder with its own
``.git`` was installed by the user and counts as an extra extension, everything else ships with Atelier.

The Gradio UI and the API call these functions; nothing here imports the UI.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from modules.errors import AtelierError
from modules.paths import BUILTIN_EXTENSIONS_DIR

log = logging.getLogger(__name__)

T = TypeVar("T")
PreloadHook = Callable[[argparse.ArgumentParser], None]

extensions: list[Extension] = []
"""The list the running app uses (A1111's global ``extensions.extensions``); set by :func:`refresh`."""


class ExtensionError(AtelierError):
    """An install/update request that cannot be carried out (bad name, existing folder, git failure)."""

    status_code = 400


# --- ordering ----------------------------------------------------------------------------------------------------

def dependency_order(items: Sequence[T], names_of: Callable[[T], Iterable[str]], after_of: Callable[[T], Iterable[str]],
                     before_of: Callable[[T], Iterable[str]], what: str = "item") -> list[T]:
    """Stable topological order: each item keeps its place unless an ``After``/``Before`` reference moves it.

    A reference names any of an item's names (``a|b`` refers to each of them that exists); unknown names are
    ignored. A cycle is broken by taking the earliest remaining item, with a warning.
    """
    names = [set(names_of(item)) for item in items]
    by_name: dict[str, list[int]] = {}
    for index, item_names in enumerate(names):
        for name in item_names:
            by_name.setdefault(name, []).append(index)

    def matching(reference: str) -> list[int]:
        return [j for alt in reference.split("|") for j in by_name.get(alt.strip().lower(), [])]

    preds: list[set[int]] = [set() for _ in items]
    for i, item in enumerate(items):
        preds[i].update(j for ref in after_of(item) for j in matching(ref) if j != i)
        for ref in before_of(item):
            for j in matching(ref):
                if j != i:
                    preds[j].add(i)
    order: list[T] = []
    done: set[int] = set()
    remaining = list(range(len(items)))
    while remaining:
        pos = next((k for k, i in enumerate(remaining) if preds[i] <= done), None)
        if pos is None:
            pos = 0
            log.warning("The Before/After/Requires entries of %s %s form a cycle; using the default order for it.",
                        what, sorted(names[remaining[0]])[0] if names[remaining[0]] else remaining[0])
        index = remaining.pop(pos)
        done.add(index)
        order.append(items[index])
    return order


# --- metadata.ini ------------------------------------------------------------------------------------------------

def parse_list(text: str | None) -> list[str]:
    """``"a, b c|d"`` -> ``["a", "b", "c|d"]`` (commas or whitespace separate; lower-cased)."""
    return [item.lower() for item in re.split(r"[,\s]+", (text or "").strip()) if item]


class ExtensionMetadata:
    """An extension's ``metadata.ini``: ``[Extension]`` Requires/Before/After, ``[scripts/<file>]`` and ``[scripts]``
    sections for scripts, ``[callbacks/<callback name>]`` sections for callbacks. The canonical name is always the
    lower-case folder name (A1111 reads ``Name`` but does not use it either)."""

    filename = "metadata.ini"

    def __init__(self, path: str | os.PathLike[str], canonical_name: str) -> None:
        self.path = str(path)
        self.canonical_name = canonical_name.lower()
        self.config = configparser.ConfigParser(interpolation=None)
        file = Path(path) / self.filename
        if file.is_file():
            try:
                self.config.read(file, encoding="utf8")
            except (configparser.Error, UnicodeDecodeError) as e:
                log.warning("Extension %s: %s could not be read (%s); it is ignored.", canonical_name, file, e)
                self.config = configparser.ConfigParser(interpolation=None)
        self.display_name = self.config.get("Extension", "Name", fallback=canonical_name)

    def get_list(self, section: str, key: str) -> list[str]:
        return parse_list(self.config.get(section, key, fallback=None)) if self.config.has_section(section) else []

    def requires(self) -> list[str]:
        return self.get_list("Extension", "Requires")

    def before(self) -> list[str]:
        return self.get_list("Extension", "Before")

    def after(self) -> list[str]:
        return self.get_list("Extension", "After")

    def get_script_requirements(self, field: str, section: str, extra_section: str | None = None) -> list[str]:
        """``field`` (Requires/Before/After) of ``section`` plus ``extra_section`` (A1111's signature)."""
        found = self.get_list(section, field)
        if extra_section:
            found += self.get_list(extra_section, field)
        return found

    def script_order(self, script_file: str, field: str) -> list[str]:
        """Requires/Before/After for ``scripts/<script_file>``, including the generic ``[scripts]`` section."""
        return self.get_script_requirements(field, f"scripts/{script_file}", "scripts")

    def callback_order(self, callback_name: str, field: str) -> list[str]:
        return self.get_list(f"callbacks/{callback_name}", field)


# --- git ---------------------------------------------------------------------------------------------------------

def _git(folder: str | os.PathLike[str] | None, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run git without prompting; a missing git or a hang is an ordinary failure (non-zero code, message)."""
    command = ["git", *(["-C", str(folder)] if folder is not None else []), *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError:
        return subprocess.CompletedProcess(command, 127, "", "git is not installed or not on PATH")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"git {args[0]} did not finish within {timeout:.0f} s")


def _git_out(folder: str | os.PathLike[str], *args: str) -> str | None:
    result = _git(folder, *args, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


@dataclass
class GitInfo:
    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None

    @property
    def version(self) -> str:
        return (self.commit_hash or "")[:8]


def read_git_info(folder: str | os.PathLike[str]) -> GitInfo:
    """Remote URL, branch (None when detached), commit hash and date of a clone; empty without ``.git``."""
    if not (Path(folder) / ".git").exists():
        return GitInfo()
    info = GitInfo(remote=_git_out(folder, "config", "--get", "remote.origin.url"))
    branch = _git_out(folder, "rev-parse", "--abbrev-ref", "HEAD")
    info.branch = branch if branch and branch != "HEAD" else None
    head = _git_out(folder, "log", "-1", "--format=%H %ct")
    if head:
        commit, _, date = head.partition(" ")
        info.commit_hash, info.commit_date = commit, int(date) if date.isdigit() else None
    return info


# --- Extension ---------------------------------------------------------------------------------------------------

class Extension:
    """One extension folder. ``enabled`` is the user's choice (not in ``disabled_extensions``); ``active`` says
    whether it loads now (also honours the disable-all modes and ``Requires``), ``disabled_reason`` says why not."""

    def __init__(self, name: str, path: str | os.PathLike[str], enabled: bool = True, is_builtin: bool = False,
                 metadata: ExtensionMetadata | None = None) -> None:
        self.name = name.lower()
        self.canonical_name = self.name
        self.dirname = Path(path).name
        self.path = str(path)
        self.enabled = enabled
        self.is_builtin = is_builtin
        self.metadata = metadata or ExtensionMetadata(path, self.name)
        self.active = enabled
        self.disabled_reason = "" if enabled else "disabled in settings"
        self.status = ""
        self.can_update = False
        self.update_error = ""
        self._git: GitInfo | None = None

    def __repr__(self) -> str:
        return f"Extension({self.name!r}, builtin={self.is_builtin}, active={self.active})"

    # git info, read on first use -------------------------------------------------------------------------------
    def read_info_from_repo(self) -> GitInfo:
        if self._git is None:
            self._git = read_git_info(self.path)
        return self._git

    def refresh_git_info(self) -> GitInfo:
        self._git = None
        return self.read_info_from_repo()

    @property
    def have_info_from_repo(self) -> bool:
        return self._git is not None

    @property
    def remote(self) -> str | None:
        return self.read_info_from_repo().remote

    @property
    def branch(self) -> str | None:
        return self.read_info_from_repo().branch

    @property
    def commit_hash(self) -> str | None:
        return self.read_info_from_repo().commit_hash

    @property
    def commit_date(self) -> int | None:
        return self.read_info_from_repo().commit_date

    @property
    def version(self) -> str:
        return self.read_info_from_repo().version

    def to_dict(self) -> dict[str, Any]:
        """The ``GET /sdapi/v1/extensions`` item."""
        return {"name": self.name, "remote": self.remote, "branch": self.branch, "commit_hash": self.commit_hash,
                "commit_date": self.commit_date, "version": self.version or None, "enabled": self.enabled}

    # files ------------------------------------------------------------------------------------------------------
    def list_files(self, subdir: str, extension: str) -> list[Path]:
        """Files ``<subdir>/*<extension>`` of this extension, sorted by name."""
        folder = Path(self.path) / subdir
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(extension))


# --- discovery -----------------------------------------------------------------------------------------------------

def _subfolders(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    folders = (p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(folders, key=lambda p: (p.name.lower(), p.name))


def _extension_folders(extensions_dir: Path, builtin_dir: Path) -> list[tuple[Path, bool]]:
    """(folder, is_builtin) pairs, built-ins first."""
    same = extensions_dir.resolve() == builtin_dir.resolve() if extensions_dir.exists() else False
    found = [(folder, not (same and (folder / ".git").exists())) for folder in _subfolders(builtin_dir)]
    if not same:
        found += [(folder, False) for folder in _subfolders(extensions_dir)]
    return found


def _disable_mode(opts: Any, args: Any) -> tuple[str, str]:
    """("none" | "extra" | "all", what caused it)."""
    if getattr(args, "disable_all_extensions", False):
        return "all", "--disable-all-extensions"
    setting = getattr(opts, "disable_all_extensions", "none") if opts is not None else "none"
    if setting == "all":
        return "all", "the disable_all_extensions setting"
    if getattr(args, "disable_extra_extensions", False):
        return "extra", "--disable-extra-extensions"
    if setting == "extra":
        return "extra", "the disable_all_extensions setting"
    return "none", ""


def _check_requirements(found: list[Extension]) -> None:
    """Deactivate extensions whose ``Requires`` are not active (repeated, since one may depend on another)."""
    changed = True
    while changed:
        changed = False
        active_names = {e.name for e in found if e.active}
        for ext in found:
            if not ext.active:
                continue
            missing = [req for req in ext.metadata.requires()
                       if not any(alt in active_names for alt in req.split("|"))]
            if missing:
                ext.active, changed = False, True
                wanted = ", ".join(req.replace("|", " or ") for req in missing)
                ext.disabled_reason = f"requires {wanted}, which is not installed or not enabled"
                log.warning("Extension %s is not loaded: it %s.", ext.name, ext.disabled_reason)


def list_extensions(paths: Any, opts: Any, args: Any, *,
                    builtin_dir: str | os.PathLike[str] = BUILTIN_EXTENSIONS_DIR) -> list[Extension]:
    """Every extension folder (inactive ones included, with ``disabled_reason``), built-ins first, then ordered so
    each comes after what it ``Requires``/``After`` names."""
    disabled = {str(n).lower() for n in (getattr(opts, "disabled_extensions", None) or [])} if opts else set()
    mode, cause = _disable_mode(opts, args)
    found: list[Extension] = []
    seen: set[str] = set()
    for folder, is_builtin in _extension_folders(Path(paths.extensions_dir), Path(builtin_dir)):
        name = folder.name.lower()
        if name in seen:
            log.warning("Extension folder %s has the same name as another extension; it is ignored.", folder)
            continue
        seen.add(name)
        ext = Extension(name, folder, enabled=name not in disabled, is_builtin=is_builtin)
        if ext.enabled and mode == "all":
            ext.active, ext.disabled_reason = False, f"all extensions are disabled by {cause}"
        elif ext.enabled and mode == "extra" and not is_builtin:
            ext.active, ext.disabled_reason = False, f"extra extensions are disabled by {cause}"
        found.append(ext)
    _check_requirements(found)
    return dependency_order(found, lambda e: [e.name], lambda e: [*e.metadata.requires(), *e.metadata.after()],
                            lambda e: e.metadata.before(), what="extension")


def active(exts: Iterable[Extension] | None = None) -> list[Extension]:
    """The extensions that load (A1111's ``extensions.active()``; without an argument: the global list)."""
    return [e for e in (extensions if exts is None else exts) if e.active]


def refresh(paths: Any, opts: Any, args: Any) -> list[Extension]:
    """List the extensions and make them the app's global list."""
    global extensions
    extensions = list_extensions(paths, opts, args)
    return extensions


def extensions_info(exts: Iterable[Extension] | None = None) -> list[dict[str, Any]]:
    """``GET /sdapi/v1/extensions`` items for every extension (without an argument: the global list)."""
    return [e.to_dict() for e in (extensions if exts is None else exts)]


def find_extension(exts: Iterable[Extension], name: str) -> Extension | None:
    return next((e for e in exts if e.name == name.lower()), None)


# --- assets for the UI -----------------------------------------------------------------------------------------------

def javascript_files(exts: Iterable[Extension]) -> list[Path]:
    """``javascript/*.js`` then ``*.mjs`` of each active extension (``.mjs`` are injected as ES modules)."""
    return [f for e in active(exts) for f in (*e.list_files("javascript", ".js"), *e.list_files("javascript", ".mjs"))]


def stylesheet_files(exts: Iterable[Extension]) -> list[Path]:
    """Each active extension's ``style.css``, in extension order."""
    return [Path(e.path) / "style.css" for e in active(exts) if (Path(e.path) / "style.css").is_file()]


def localization_files(exts: Iterable[Extension]) -> dict[str, list[Path]]:
    """Localization name (file stem) -> its ``localizations/<name>.json`` files, to merge in extension order."""
    found: dict[str, list[Path]] = {}
    for ext in active(exts):
        for file in ext.list_files("localizations", ".json"):
            found.setdefault(file.stem, []).append(file)
    return found


# --- install / update --------------------------------------------------------------------------------------------

def _default_dirname(url: str) -> str:
    tail = url.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:-4] if tail.endswith(".git") else tail


def _normalise_remote(url: str | None) -> str:
    return (url or "").rstrip("/").removesuffix(".git").lower()


def _clone_source(url_or_path: str) -> tuple[str, bool]:
    """(what git clones, whether it is a network URL)."""
    text = url_or_path.strip()
    if not text:
        raise ExtensionError("No extension URL was given.", "Paste the git URL of the extension's repository.")
    if "://" not in text and not text.startswith("git@") and Path(text).expanduser().exists():
        return str(Path(text).expanduser().resolve()), False
    return text, text.startswith(("http://", "https://", "ssh://", "git://", "git@"))


def install_extension(url_or_path: str, paths: Any, branch: str | None = None,
                      dirname: str | None = None) -> Extension:
    """Clone an extension into ``<extensions_dir>/<dirname>`` (via a hidden temporary folder, then one rename),
    then run its ``install.py``. Needs a restart (or script reload) before its scripts run."""
    from modules import extensions_install

    source, is_network = _clone_source(url_or_path)
    dirname = (dirname or _default_dirname(source)).strip()
    if not dirname or dirname in (".", "..") or dirname.startswith(".") or re.search(r"[/\\\x00]", dirname):
        raise ExtensionError(f"{dirname!r} is not a usable folder name for an extension.",
                             "Give a plain folder name (letters, digits, - and _).")
    base = Path(paths.extensions_dir)
    target = base / dirname
    if target.exists():
        raise ExtensionError(f"An extension folder named {dirname!r} already exists in {base}.",
                             "Choose another folder name, or remove the old folder first.")
    for folder in _subfolders(base):
        if (folder / ".git").exists() and _normalise_remote(read_git_info(folder).remote) == _normalise_remote(source):
            raise ExtensionError(f"That repository is already installed as {folder.name!r}.",
                                 "Use Check for updates on the installed copy instead.")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".install-{dirname}-", dir=base))
    try:
        command = ["clone", *(["--filter=blob:none"] if is_network else []),
                   *(["--branch", branch] if branch else []), "--", source, str(tmp)]
        result = _git(None, *command)
        if result.returncode != 0:
            raise ExtensionError(f"git clone of {url_or_path} failed: {result.stderr.strip() or result.stdout.strip()}",
                                 "Check the URL (and branch name) and that git can reach it.")
        if (tmp / ".gitmodules").exists():
            sub = _git(tmp, "submodule", "update", "--init", "--recursive")
            if sub.returncode != 0:
                log.warning("Extension %s: git submodule update failed: %s", dirname, sub.stderr.strip())
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    extensions_install.run_install_script(target)
    return Extension(dirname, target, is_builtin=False)


def _upstream(folder: str) -> str | None:
    for ref in ("@{upstream}", "origin/HEAD"):
        commit = _git_out(folder, "rev-parse", "--verify", "--quiet", ref)
        if commit:
            return commit
    return None


def check_for_updates(ext: Extension) -> bool:
    """``git fetch``, then whether the remote branch has commits this copy lacks; sets ``status``/``can_update``
    ("behind", "latest", or "unknown" with ``update_error``)."""
    ext.can_update, ext.update_error = False, ""
    if not (Path(ext.path) / ".git").exists():
        ext.status, ext.update_error = "unknown", "not a git clone"
        return False
    fetched = _git(ext.path, "fetch", "--quiet")
    upstream = _upstream(ext.path) if fetched.returncode == 0 else None
    if upstream is None:
        ext.status = "unknown"
        ext.update_error = fetched.stderr.strip() or "the branch has no remote branch to compare with"
        log.warning("Extension %s: could not check for updates: %s", ext.name, ext.update_error)
        return False
    behind = _git_out(ext.path, "rev-list", "--count", f"HEAD..{upstream}")
    ext.can_update = bool(behind and int(behind) > 0)
    ext.status = "behind" if ext.can_update else "latest"
    return ext.can_update


def update_extension(ext: Extension) -> bool:
    """Fast-forward the clone to its remote branch; True if it moved. Local commits that diverge are an error."""
    if not (Path(ext.path) / ".git").exists():
        raise ExtensionError(f"Extension {ext.name} is not a git clone; it cannot be updated.", "Reinstall it.")
    before = _git_out(ext.path, "rev-parse", "HEAD")
    fetched = _git(ext.path, "fetch", "--quiet")
    upstream = _upstream(ext.path) if fetched.returncode == 0 else None
    if upstream is None:
        raise ExtensionError(f"Extension {ext.name}: fetching updates failed: {fetched.stderr.strip()}",
                             "Check the network and the extension's remote.")
    merged = _git(ext.path, "merge", "--ff-only", upstream)
    if merged.returncode != 0:
        raise ExtensionError(f"Extension {ext.name} cannot be fast-forwarded: {merged.stderr.strip()}",
                             "It has local changes or commits; update it by hand with git.")
    ext.refresh_git_info()
    ext.status, ext.can_update = "latest", False
    return ext.commit_hash != before


# --- preload.py and flag parsing ---------------------------------------------------------------------------------

def preload_hooks(paths: Any, opts: Any, args_before: Any, *,
                  exts: Sequence[Extension] | None = None) -> list[PreloadHook]:
    """Import each active extension's ``preload.py`` and collect its ``preload(parser)``; failures are logged."""
    hooks: list[PreloadHook] = []
    for ext in active(exts if exts is not None else list_extensions(paths, opts, args_before)):
        file = Path(ext.path) / "preload.py"
        if not file.is_file():
            continue
        try:
            module_name = "preload_" + re.sub(r"\W", "_", ext.name)
            spec = importlib.util.spec_from_file_location(module_name, file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except Exception:
            log.exception("Extension %s: preload.py failed; its command-line flags are not available.", ext.name)
            continue
        hook = getattr(module, "preload", None)
        if callable(hook):
            hooks.append(_isolated_preload(ext.name, hook))
    return hooks


def _isolated_preload(name: str, hook: PreloadHook) -> PreloadHook:
    def run(parser: argparse.ArgumentParser) -> None:
        try:
            hook(parser)
        except Exception:
            log.exception("Extension %s: preload(parser) failed; its command-line flags are not available.", name)

    return run


def _extension_settings(settings_file: Path) -> argparse.Namespace:
    """The two extension settings from the settings file, read without side effects (the real settings load
    reports a broken file later)."""
    values: dict[str, Any] = {}
    try:
        loaded = json.loads(Path(settings_file).read_text(encoding="utf8"))
        values = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    disabled = values.get("disabled_extensions")
    mode = values.get("disable_all_extensions")
    return argparse.Namespace(disabled_extensions=disabled if isinstance(disabled, list) else [],
                              disable_all_extensions=mode if mode in ("none", "extra", "all") else "none")


def parse_args_with_preload(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None
                            ) -> argparse.Namespace:
    """Parse the flags with every active extension's ``preload(parser)`` applied (A1111 runs preload.py first).

    A first, lenient pass reads only what decides which extensions are active (folders, settings file, the
    ``--disable-*`` flags); unknown flags are left for the real parse, which reports them as usual.
    """
    from modules import cmd_args
    from modules.paths import paths_from_args

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = cmd_args.build_parser()
    parser.allow_abbrev = False
    everything = cmd_args.argv_with_env(argv, environ)
    light, _unknown = parser.parse_known_args([a for a in everything if a not in ("-h", "--help")])
    paths = paths_from_args(light)
    hooks = preload_hooks(paths, _extension_settings(paths.settings_file), light)
    return cmd_args.parse_args(argv, environ=environ, preload_hooks=hooks)
