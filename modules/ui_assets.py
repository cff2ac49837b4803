"""What the served page loads besides Gradio's own files: scripts for ``<head>`` and style sheets.

A1111's order: the repository's ``javascript/*.js``, then each active extension's ``javascript/*.js`` as classic
scripts, then every ``*.mjs`` as ES modules; style sheets are the root ``style.css``, each active extension's
``style.css``, then ``user.css`` from the data folder. Scripts are inlined into Gradio's ``head=`` (Gradio re-creates
them so they run); style sheets go to ``css_paths=``. The selected localization (``modules.localization``) is
embedded as ``window.localization`` ahead of the scripts, so ``javascript/localization.js`` finds it.
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modules import extensions
from modules.paths import ROOT

JAVASCRIPT_DIR = ROOT / "javascript"
STYLE_FILE = ROOT / "style.css"

RESTART_RELOAD_JS = """<script>
window.atelierRestartReload = function () {
    // Poll /internal/ping until a different build of the app answers (the server restarted), then reload. Nothing
    // happens when the server refused to restart; polling stops after ten minutes.
    var started = window.atelierServerBuild, deadline = Date.now() + 600000;
    if (window.atelierRestartPolling) return;
    window.atelierRestartPolling = true;
    var notice = document.createElement("div");
    notice.id = "atelier_restart_notice";
    notice.textContent = "Restarting the UI...";
    notice.style.cssText = "position:fixed;top:0;left:0;right:0;padding:8px;text-align:center;z-index:10000;" +
        "background:var(--background-fill-secondary,#eee)";
    var ping = function () {
        if (Date.now() > deadline) { window.atelierRestartPolling = false; notice.remove(); return; }
        fetch("./internal/ping", {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (d) {
            if (d && d.build && d.build !== started) { window.location.reload(); } else { setTimeout(ping, 500); }
        }).catch(function () {
            if (!notice.parentNode) document.body.appendChild(notice);
            setTimeout(ping, 500);
        });
    };
    setTimeout(ping, 500);
};
</script>"""


def theme_script(theme: str | None) -> str:
    """``--theme light|dark``: reload with Gradio's ``?__theme=`` parameter unless the URL already has it."""
    if theme not in ("light", "dark"):
        return ""
    return ("<script>(function(){var u=new URL(window.location.href);"
            f"if(u.searchParams.get('__theme')!=='{theme}'){{u.searchParams.set('__theme','{theme}');"
            "window.location.replace(u.href);}})();</script>")


def repository_scripts() -> list[Path]:
    """The page scripts in the repository's ``javascript/``, in name order."""
    return sorted(JAVASCRIPT_DIR.glob("*.js")) if JAVASCRIPT_DIR.is_dir() else []


def script_files(exts: Iterable[extensions.Extension]) -> tuple[list[Path], list[Path]]:
    """(classic scripts, ES modules): the repository's scripts, then each active extension's, in load order."""
    found = [*repository_scripts(), *extensions.javascript_files(exts)]
    classic = [p for p in found if p.suffix.lower() == ".js"]
    modules = [p for p in found if p.suffix.lower() == ".mjs"]
    return classic, modules


def _inline_script(path: Path, module: bool) -> str:
    source = path.read_text(encoding="utf8").replace("</script", "<\\/script")
    kind = ' type="module"' if module else ""
    owner = "javascript" if path.parent == JAVASCRIPT_DIR else path.parent.parent.name
    return f"<script{kind} data-source='{html.escape(f'{owner}/{path.name}')}'>{source}</script>"


def _json_for_script(data: Any) -> str:
    return json.dumps(data).replace("</", "<\\/")


def localization_script(translations: dict[str, str]) -> str:
    """``window.localization = {...}`` for ``javascript/localization.js``; nothing when no localization is selected."""
    return f"<script>window.localization = {_json_for_script(translations)};</script>" if translations else ""


def page_head(args: argparse.Namespace, exts: Iterable[extensions.Extension], build_id: str,
              tooltips: dict[str, str] | None = None, translations: dict[str, str] | None = None) -> str:
    """The page's ``<head>`` additions: theme switch, tooltips, the build id (for reloads), the selected
    localization's ``translations`` and every script."""
    exts = list(exts)
    parts = [theme_script(getattr(args, "theme", None)),
             f"<script>window.atelierServerBuild = {json.dumps(build_id)};</script>", RESTART_RELOAD_JS]
    if tooltips:
        parts.append(f"<script>window.atelierTooltips = {_json_for_script(tooltips)};</script>")
    parts.append(localization_script(translations))
    classic, modules = script_files(exts)
    parts += [_inline_script(p, module=False) for p in classic]
    parts += [_inline_script(p, module=True) for p in modules]
    return "\n".join(p for p in parts if p)


def css_files(paths: Any, exts: Iterable[extensions.Extension]) -> list[Path]:
    """Root ``style.css``, each active extension's ``style.css``, then the user's ``user.css`` (A1111's order)."""
    found = [STYLE_FILE] if STYLE_FILE.is_file() else []
    found += extensions.stylesheet_files(exts)
    user_css = Path(paths.data_dir) / "user.css" if paths is not None else None
    if user_css is not None and user_css.is_file():
        found.append(user_css)
    return found
