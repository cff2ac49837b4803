"""The Extensions tab: the installed extensions with their git state, enabling/disabling them ("Apply" saves,
"Apply and restart UI" also reloads every extension's scripts, callbacks, tabs and page files), install from URL.

Discovery, git details and cloning are `modules.extensions`'s job; this module lays them out and guards them.
Installing or switching extensions runs code from the internet on the server, so, as in A1111, those actions are
refused when the server listens beyond this machine unless `--enable-insecure-extension-access` is given
(`extension_access_allowed`).
"""

from __future__ import annotations

import datetime
import html
import ipaddress
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from modules import extensions
from modules.errors import AtelierError
from modules.options import Options, SettingsError
from modules.paths import BUILTIN_EXTENSIONS_DIR

log = logging.getLogger(__name__)

SAVED_PREFIX = "Saved."


# access ---------------------------------------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def extension_access_allowed(args: Any) -> tuple[bool, str]:
    """Whether the UI may install or switch extensions, and the reason when it may not.

    Refused when the server is reachable from other machines (`--listen`, `--share`, or a `--server-name` that is
    not a loopback address) unless `--enable-insecure-extension-access` is set.
    """
    if getattr(args, "enable_insecure_extension_access", False):
        return True, ""
    exposed_by = []
    if getattr(args, "listen", False):
        exposed_by.append("--listen")
    if getattr(args, "share", False):
        exposed_by.append("--share")
    server_name = getattr(args, "server_name", None)
    if server_name and not _is_loopback(server_name):
        exposed_by.append(f"--server-name {server_name}")
    if not exposed_by:
        return True, ""
    return False, (f"Extension access is disabled because the server listens beyond this machine "
                   f"({', '.join(exposed_by)}). Restart with --enable-insecure-extension-access to allow it.")


# listing --------------------------------------------------------------------------------------------------------------
def list_installed(ctx: Any, builtin_dir: str | Path = BUILTIN_EXTENSIONS_DIR) -> list[extensions.Extension]:
    """Every extension folder, built-ins first, with its enabled state (`disabled_extensions`) and git details."""
    return extensions.list_extensions(ctx.paths, ctx.opts, ctx.args, builtin_dir=builtin_dir)


def _commit_date(ext: extensions.Extension) -> str:
    stamp = ext.commit_date
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else ""


def script_load_errors(name: str) -> list[str]:
    """What went wrong loading the extension's script files at the last (re)start, one line per file."""
    from modules import scripts

    return [f"{Path(e.path).name} failed to load: {e.message}" for e in scripts.load_errors if e.extension == name]


def _enabled_cell(ext: extensions.Extension) -> str:
    if not ext.enabled:
        return "no"
    if not ext.active:
        return f"yes (not loaded: {ext.disabled_reason})"
    errors = script_load_errors(ext.name)
    return f"yes ({'; '.join(errors)})" if errors else "yes"


def extensions_table_html(found: list[extensions.Extension]) -> str:
    """The installed list as an HTML table (name, enabled, URL, branch, version, date)."""
    if not found:
        return '<p id="extensions_empty">No extensions installed.</p>'
    rows = []
    for ext in found:
        remote = ext.remote or ""
        url = html.escape(remote)
        link = f'<a href="{url}" target="_blank" rel="noopener">{url}</a>' if remote.startswith("http") else url
        kind = " (built-in)" if ext.is_builtin else ""
        cells = (f"{html.escape(ext.name)}{kind}", html.escape(_enabled_cell(ext)), link,
                 html.escape(ext.branch or ""), html.escape(ext.version), html.escape(_commit_date(ext)))
        rows.append(f'<tr data-extension="{html.escape(ext.name)}">{"".join(f"<td>{c}</td>" for c in cells)}</tr>')
    head = "".join(f"<th>{h}</th>" for h in ("Extension", "Enabled", "URL", "Branch", "Version", "Date"))
    return (f'<table id="extensions_installed_table" class="extensions-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


# actions --------------------------------------------------------------------------------------------------------------
def apply_enabled(opts: Options, settings_file: str | Path, all_names: list[str], enabled: list[str],
                  args: Any) -> str:
    """Store every listed extension that is not in `enabled` as `disabled_extensions` and save the settings."""
    allowed, reason = extension_access_allowed(args)
    if not allowed:
        return reason
    enabled_set = set(enabled or [])
    # names no longer installed keep their disabled state, so reinstalling does not silently enable them
    listed = set(all_names)
    disabled = [n for n in (opts.disabled_extensions or []) if n not in listed]
    disabled += [n for n in all_names if n not in enabled_set]
    try:
        opts.set("disabled_extensions", disabled)
        opts.save(settings_file)
    except (SettingsError, OSError) as e:
        return f"Could not save the enabled extensions: {e}"
    return f"{SAVED_PREFIX} Disabled extensions: {', '.join(disabled) or 'none'}. Restart Atelier to load the change."


def apply_and_restart(ctx: Any, all_names: list[str], enabled: list[str]) -> str:
    """A1111's "Apply and restart UI": save as :func:`apply_enabled` does, then ask the server loop
    (``modules.server_reload``) to rebuild the app. Nothing restarts when saving was refused or failed."""
    message = apply_enabled(ctx.opts, ctx.paths.settings_file, all_names, enabled, ctx.args)
    if not message.startswith(SAVED_PREFIX):
        return message
    ctx.queue.state.server_command = "restart"
    return message.replace("Restart Atelier to load the change.", "Restarting the UI...")


def install_from_url(url: str, branch: str, dirname: str, ctx: Any) -> str:
    """Clone an extension with `modules.extensions.install_extension`; refusals and failures are messages."""
    allowed, reason = extension_access_allowed(ctx.args)
    if not allowed:
        return reason
    url = (url or "").strip()
    if not url:
        return "Enter the URL of the extension's git repository."
    try:
        installed = extensions.install_extension(url, ctx.paths, branch=(branch or "").strip() or None,
                                                 dirname=(dirname or "").strip() or None)
    except AtelierError as e:
        return f"Installing {url} failed: {e}"
    except Exception as e:  # git missing, disk full: a message, not a traceback
        log.warning("Installing extension from %s failed", url, exc_info=True)
        return f"Installing {url} failed: {type(e).__name__}: {e}"
    return f"Installed {url} into {installed.path}. Restart Atelier to load it."


def check_updates(ctx: Any, builtin_dir: str | Path = BUILTIN_EXTENSIONS_DIR) -> str:
    """``git fetch`` every user-installed extension and say which ones have updates (A1111's "Check for updates")."""
    lines = []
    for ext in list_installed(ctx, builtin_dir):
        if ext.is_builtin:
            continue
        behind = extensions.check_for_updates(ext)
        state = "update available" if behind else ("latest" if ext.status == "latest" else
                                                   f"unknown ({ext.update_error})")
        lines.append(f"{ext.name}: {state}")
    return "; ".join(lines) or "No user-installed extensions to check."


def update_all(ctx: Any, builtin_dir: str | Path = BUILTIN_EXTENSIONS_DIR) -> str:
    """Fast-forward every user-installed extension that is behind its remote; failures are reported per extension."""
    allowed, reason = extension_access_allowed(ctx.args)
    if not allowed:
        return reason
    updated, failed = [], []
    for ext in list_installed(ctx, builtin_dir):
        if ext.is_builtin or not extensions.check_for_updates(ext):
            continue
        try:
            if extensions.update_extension(ext):
                updated.append(ext.name)
        except AtelierError as e:
            failed.append(f"{ext.name} ({e.message})")
    text = f"Updated: {', '.join(updated)}. Restart the UI to load them." if updated else "Nothing to update."
    return text + (f" Failed: {'; '.join(failed)}." if failed else "")


# UI -------------------------------------------------------------------------------------------------------------------
def _message(text: str) -> str:
    return f'<p class="extensions-message">{html.escape(text)}</p>'


def create_extensions_tab(ctx: Any) -> None:
    """Fill the open Extensions tab: "Installed" (table, enable/disable, Apply) and "Install from URL"."""
    allowed, reason = extension_access_allowed(ctx.args)

    def listing() -> list[extensions.Extension]:
        return list_installed(ctx)

    def refresh() -> tuple[str, Any, list[str]]:
        found = listing()
        names = [e.name for e in found]
        checkboxes = gr.CheckboxGroup(choices=names, value=[e.name for e in found if e.enabled])
        return extensions_table_html(found), checkboxes, names

    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", elem_id="extensions_installed_tab"):
            if not allowed:
                gr.HTML(_message(reason), elem_id="extensions_access_notice")
            with gr.Row():
                apply_button = gr.Button("Apply", variant="primary", elem_id="extensions_apply")
                restart_button = gr.Button("Apply and restart UI", elem_id="extensions_apply_restart")
                refresh_button = gr.Button("Refresh list", elem_id="extensions_refresh")
                check_button = gr.Button("Check for updates", elem_id="extensions_check")
                update_button = gr.Button("Update all", elem_id="extensions_update")
            found = listing()
            enabled = gr.CheckboxGroup(choices=[e.name for e in found], value=[e.name for e in found if e.enabled],
                                       label="Enabled extensions", elem_id="extensions_enabled")
            table = gr.HTML(extensions_table_html(found), elem_id="extensions_installed")
            shown_names = gr.State([e.name for e in found])  # what the checkboxes offered, so Apply ignores newcomers
            apply_result = gr.HTML(elem_id="extensions_apply_result")

        with gr.Tab("Install from URL", elem_id="extensions_install_tab"):
            url = gr.Textbox(label="URL for extension's git repository", elem_id="extension_install_url")
            branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for the default branch",
                                elem_id="extension_install_branch")
            dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for the name in the URL",
                                 elem_id="extension_install_dirname")
            install_button = gr.Button("Install", variant="primary", elem_id="extension_install_button")
            install_result = gr.HTML(elem_id="extension_install_result")

    def apply(chosen: list[str], names: list[str]) -> list[Any]:
        message = apply_enabled(ctx.opts, ctx.paths.settings_file, names, chosen, ctx.args)
        return [_message(message), *refresh()]

    def restart(chosen: list[str], names: list[str]) -> list[Any]:
        return [_message(apply_and_restart(ctx, names, chosen)), *refresh()]

    def install(url_value: str, branch_value: str, dirname_value: str) -> list[Any]:
        return [_message(install_from_url(url_value, branch_value, dirname_value, ctx)), *refresh()]

    listed = [table, enabled, shown_names]
    private = {"show_progress": "hidden", "api_visibility": "private"}
    refresh_button.click(refresh, outputs=listed, **private)
    check_button.click(lambda: _message(check_updates(ctx)), outputs=[apply_result], **private)
    update_button.click(lambda: [_message(update_all(ctx)), *refresh()], outputs=[apply_result, *listed], **private)
    apply_button.click(apply, inputs=[enabled, shown_names], outputs=[apply_result, *listed], **private)
    # the page starts watching for the rebuilt app before the request goes out (javascript in modules.ui_assets)
    restart_button.click(restart, inputs=[enabled, shown_names], outputs=[apply_result, *listed],
                         js="(chosen, names) => { if (window.atelierRestartReload) window.atelierRestartReload(); "
                            "return [chosen, names]; }", **private)
    install_button.click(install, inputs=[url, branch, dirname], outputs=[install_result, *listed],
                         api_visibility="private")
    root = gr.context.Context.root_block
    if root is not None:  # the list as it is when the page opens, not as it was at start
        root.load(refresh, outputs=listed, queue=False, **private)
