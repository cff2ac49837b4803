"""The browser UI: the checkpoint bar and the tabs (txt2img, img2img, Extras, PNG Info, Settings, Extensions), and
the paste wiring between them (A1111's ``modules/ui.py`` ``create_ui``).

Each tab's content comes from its own module; tabs built by optional modules are skipped when the module is absent.
Extensions add tabs with ``on_ui_tabs`` (placed before Settings and Extensions, as in A1111) and settings with
``on_ui_settings`` (run before the Settings tab is built, so their options appear there).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from modules import infotext, script_callbacks, scripts
from modules.ui_common import UiDefaults, UiEnv, error_html, parse_infotext, paste_values, registered_fields
from modules.ui_component_hooks import component_hooks
from modules.ui_components import ToolButton
from modules.ui_generation import REFRESH
from modules.ui_img2img import MODE_IMG2IMG, create_img2img_tab
from modules.ui_pnginfo import create_pnginfo_tab
from modules.ui_txt2img import create_txt2img_tab

log = logging.getLogger(__name__)

OPTIONAL_TABS = (
    ("modules.ui_extras", "create_extras_tab", "Extras", "extras"),
    ("modules.ui_settings", "create_settings_tab", "Settings", "settings"),
    ("modules.ui_extensions", "create_extensions_tab", "Extensions", "extensions"),
)


def create_ui(ctx: Any, args: argparse.Namespace) -> gr.Blocks:
    """All tabs in one ``gr.Blocks``; ``ctx`` is the app's ``ApiContext`` (settings, folders, queue, model)."""
    infotext.reset()
    env = UiEnv(ctx=ctx, args=args, defaults=UiDefaults.load(getattr(ctx.paths, "ui_config_file", None)),
                styles=styles_database(ctx))
    script_callbacks.ui_settings_callback()  # extensions declare options before the Settings tab lists them
    with component_hooks():
        extension_tabs = script_callbacks.ui_tabs_with_owners()  # their own gr.Blocks, built outside ours
        demo = build_blocks(env, extension_tabs)
    demo.atelier_tooltips = collect_tooltips(demo)
    return demo


def build_blocks(env: UiEnv, extension_tabs: list[tuple[str, Any]]) -> gr.Blocks:
    """The page: checkpoint bar, then the tabs (extensions' before Settings and Extensions, as in A1111)."""
    with gr.Blocks(title="Atelier", analytics_enabled=False) as demo:
        checkpoint = build_checkpoint_bar(env)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                scripts.scripts_current = scripts.scripts_txt2img  # its scripts see the tab's components
                txt2img = create_txt2img_tab(env)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                scripts.scripts_current = scripts.scripts_img2img
                img2img = create_img2img_tab(env)
            scripts.scripts_current = None
            optional_tab(env.ctx, *OPTIONAL_TABS[0])
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo = create_pnginfo_tab(env)
            for owner, entry in extension_tabs:
                render_extension_tab(owner, entry)
            for spec in OPTIONAL_TABS[1:]:
                optional_tab(env.ctx, *spec)
        infotext.add_paste_fields("txt2img", None, txt2img.form.paste_fields())
        infotext.add_paste_fields("img2img", img2img.init_img, img2img.form.paste_fields())
        connect_paste_buttons(env, tabs, txt2img, img2img, pnginfo)
        demo.load(lambda: checkpoint_dropdown(env.ctx), outputs=[checkpoint], show_progress="hidden",
                  api_visibility="private")
    return demo


def styles_database(ctx: Any) -> Any:
    """The app's style database (``shared.prompt_styles``, which the API and extensions use) when it reads the same
    file, so a refresh in the UI is seen everywhere; else one of its own."""
    from modules import shared
    from modules.styles import StyleDatabase

    existing = getattr(shared, "prompt_styles", None)
    if isinstance(existing, StyleDatabase) and Path(existing.path) == Path(ctx.paths.styles_file):
        return existing
    return StyleDatabase(ctx.paths.styles_file)


def optional_tab(ctx: Any, module_name: str, function: str, label: str, tab_id: str) -> None:
    """A tab whose content another module builds; nothing when the module is not there."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return
        raise
    with gr.Tab(label, id=tab_id, elem_id=f"tab_{tab_id}"):
        try:
            getattr(module, function)(ctx)
        except Exception as exc:  # a broken tab must not take the whole UI down
            log.exception("Could not build the %s tab", label)
            gr.HTML(error_html(exc))


def render_extension_tab(owner: str, entry: Any) -> None:
    """One ``on_ui_tabs`` entry ``(gr.Blocks, title, elem_id)`` as a top tab; a malformed entry or a failing render
    becomes a tab (or a log line) that names the extension instead of breaking the page."""
    if not isinstance(entry, tuple | list) or len(entry) < 2:
        log.error("Extension %s: on_ui_tabs returned %r, not (gr.Blocks, title, elem_id); the tab is left out.",
                  owner or "?", entry)
        return
    interface, title = entry[0], str(entry[1])
    tab_id = str(entry[2]) if len(entry) > 2 and entry[2] else title.lower().replace(" ", "_")
    with gr.Tab(title, id=tab_id, elem_id=f"tab_{tab_id}"):
        try:
            if not isinstance(interface, gr.Blocks):
                raise TypeError(f"on_ui_tabs gave a {type(interface).__name__} for the tab {title!r}, "
                                "not a gr.Blocks")
            interface.render()
        except Exception as exc:
            log.error("Extension %s: its tab %r could not be shown: %s", owner or "?", title, exc)
            gr.HTML(error_html(RuntimeError(f"Extension {owner or '?'}: {exc}")), elem_id=f"tab_{tab_id}_error")


# checkpoint bar -----------------------------------------------------------------------------------------------------
def current_checkpoint_title(ctx: Any) -> str | None:
    """The checkpoint the next job will use: the setting's closest match, else the first one found."""
    from modules.sd_models import get_closest_checkpoint_match

    if not ctx.checkpoints:
        return None
    wanted = ctx.opts.sd_model_checkpoint
    if wanted:
        try:
            return get_closest_checkpoint_match(wanted, ctx.checkpoints).title
        except Exception:
            log.debug("setting names an unknown checkpoint: %s", wanted)
    return next(iter(ctx.checkpoints.values())).title


def checkpoint_dropdown(ctx: Any) -> gr.Dropdown:
    return gr.Dropdown(choices=[c.title for c in ctx.checkpoints.values()], value=current_checkpoint_title(ctx))


def build_checkpoint_bar(env: UiEnv) -> gr.Dropdown:
    """The checkpoint dropdown (sets and saves ``sd_model_checkpoint``; loading waits for the next job) and its
    refresh button (rescans the folders on the job queue)."""
    ctx = env.ctx
    with gr.Row(elem_id="quicksettings"):
        titles = [c.title for c in ctx.checkpoints.values()]
        dropdown = gr.Dropdown(label="Stable Diffusion checkpoint", choices=titles,
                               value=current_checkpoint_title(ctx), elem_id="setting_sd_model_checkpoint",
                               scale=0, min_width=400)
        refresh = ToolButton(REFRESH, elem_id="refresh_sd_model_checkpoint", tooltip="Rescan the checkpoint folders")
        gr.HTML("", elem_id="quicksettings_spacer", scale=4)
    notice = gr.HTML(model_notice_html(ctx), elem_id="model_notice")

    def choose(title: str | None) -> None:
        if not title:
            return
        from modules.sd_models import get_closest_checkpoint_match

        try:
            title = get_closest_checkpoint_match(title, ctx.checkpoints).title
            ctx.opts.set("sd_model_checkpoint", title)
        except Exception as e:  # frozen setting, or a checkpoint removed since the list was made
            gr.Warning(f"Checkpoint not changed: {e}")
            return
        settings_file = getattr(ctx.paths, "settings_file", None)
        if settings_file is not None:
            ctx.opts.save(settings_file)

    def rescan() -> tuple[gr.Dropdown, str]:
        ctx.queue.submit(ctx.refresh_checkpoints, kind="refresh", description="refresh checkpoints").wait()
        return checkpoint_dropdown(ctx), model_notice_html(ctx)

    dropdown.input(choose, inputs=[dropdown], show_progress="hidden", api_visibility="private")
    refresh.click(rescan, outputs=[dropdown, notice], show_progress="hidden", api_visibility="private")
    return dropdown


def model_notice_html(ctx: Any) -> str:
    """A banner when there is nothing but the built-in demo model, or no checkpoint at all: where real ones go."""
    from html import escape

    from modules.paths import DEMO_CHECKPOINT_DIR

    folder = escape(str(ctx.paths.checkpoint_dirs[0]))
    where = (f"Put Stable Diffusion checkpoints (<code>.safetensors</code>, SD 1.x, 2.x or SDXL) in "
             f"<code>{folder}</code> and press the refresh button next to the checkpoint list.")
    infos = list(ctx.checkpoints.values())
    if not infos:
        return f"<div class='model-notice'>No checkpoint found. {where}</div>"
    demo_root = DEMO_CHECKPOINT_DIR.resolve()
    if all(Path(info.filename).resolve().is_relative_to(demo_root) for info in infos):
        return ("<div class='model-notice'>Running on Atelier's small built-in demo model (64&times;64 coloured "
                f"shapes: try &quot;a red circle on a blue background&quot;). {where}</div>")
    return ""


# paste and send-to ----------------------------------------------------------------------------------------------------
def _unique_fields(fields: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    seen: set[int] = set()
    unique = []
    for component, target in fields:
        if component is not None and component._id not in seen:
            seen.add(component._id)
            unique.append((component, target))
    return unique


def last_generation_infotext(env: UiEnv) -> str:
    """``<data>/params.txt``: the infotext of the last generation (A1111's "last prompt")."""
    path = Path(env.ctx.paths.data_dir) / "params.txt"
    try:
        return path.read_text(encoding="utf8")
    except OSError:
        return ""


def connect_paste_buttons(env: UiEnv, tabs: gr.Tabs, txt2img: Any, img2img: Any, pnginfo: Any) -> None:
    """The ↙ button of each tab (infotext in the prompt, or the last generation) and PNG Info's send buttons."""
    for tab in (txt2img, img2img):
        fields = _unique_fields(registered_fields(tab.form.tabname))

        def paste(text: str, fields: list[tuple[Any, Any]] = fields) -> list[Any]:
            text = text if text and text.strip() else last_generation_infotext(env)
            return paste_values(fields, parse_infotext(text))

        tab.form.paste.click(paste, inputs=[tab.form.prompt], outputs=[c for c, _ in fields], show_progress="hidden",
                             api_visibility="private")

    t2i_fields = _unique_fields(registered_fields("txt2img"))

    def send_to_txt2img(text: str) -> list[Any]:
        return [gr.Tabs(selected="txt2img"), *paste_values(t2i_fields, parse_infotext(text))]

    pnginfo.send_to_txt2img.click(send_to_txt2img, inputs=[pnginfo.generation_info],
                                  outputs=[tabs, *(c for c, _ in t2i_fields)], show_progress="hidden",
                                  api_visibility="private")

    i2i_fields = _unique_fields(registered_fields("img2img"))

    def send_to_img2img(text: str, image: str | None) -> list[Any]:
        head = [gr.Tabs(selected="img2img"), gr.Tabs(selected="img2img"), MODE_IMG2IMG,
                gr.Group(visible=False), image if image else gr.skip()]
        return [*head, *paste_values(i2i_fields, parse_infotext(text))]

    pnginfo.send_to_img2img.click(
        send_to_img2img, inputs=[pnginfo.generation_info, pnginfo.image],
        outputs=[tabs, img2img.mode_tabs, img2img.mode, img2img.inpaint_controls, img2img.init_img,
                 *(c for c, _ in i2i_fields)], show_progress="hidden", api_visibility="private")


def collect_tooltips(demo: gr.Blocks) -> dict[str, str]:
    """``{elem_id: tooltip}`` of the tool buttons, shown as their titles by ``javascript/ui.js``."""
    return {block.elem_id: block.tooltip for block in demo.blocks.values()
            if isinstance(block, ToolButton) and block.elem_id and block.tooltip}
