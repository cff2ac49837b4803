"""The Settings tab: every declared setting as a form field, grouped by section, and "Apply settings".

A1111 users expect one page per section picked from a list on the left, and one button that validates and saves
everything they changed. The validation and saving (`apply_settings`) is plain Python so it is tested without a
browser; the Gradio part only lays out fields and forwards their values.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from modules.options import OptionInfo, Options, SettingsError

log = logging.getLogger(__name__)

SHOW_ALL_PAGES = "Show all pages"
OTHER_SECTION = ("other", "Other")

DIR_SETTINGS = frozenset({"samples_filename_pattern", "directories_filename_pattern", "outdir_samples",
                          "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples",
                          "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save",
                          "outdir_init_images", "temp_dir", "clean_temp_dir_at_start"})
"""Folder and file-name settings that `--hide-ui-dir-config` locks in the UI, as A1111 does."""

QUICKSETTINGS = frozenset({"sd_model_checkpoint"})
"""Settings edited in the bar above the tabs (`modules.ui`); left off this page so two fields never edit one value."""


# applying ------------------------------------------------------------------------------------------------------------
@dataclass
class ApplyResult:
    """What one "Apply settings" did: the keys changed and a line per value refused."""

    changed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def message(self) -> str:
        count = len(self.changed)
        text = f"{count} setting{'' if count == 1 else 's'} changed"
        text += f": {', '.join(self.changed)}." if count else "."
        if self.errors:
            text += " Not applied: " + " ".join(self.errors)
        return text


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return (a in (None, "")) and (b in (None, ""))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def apply_settings(opts: Options, values: Mapping[str, Any], settings_file: str | Path | None, *,
                   locked: Iterable[str] = ()) -> ApplyResult:
    """Validate and apply every value that differs from the current one, then save once if anything changed.

    A value that cannot be converted, a frozen or locked setting, or an `onchange` callback that fails is reported
    in `errors` and leaves that setting as it was; the other changes still apply.
    """
    result = ApplyResult()
    locked = set(locked)
    for key, raw in values.items():
        if key not in opts.data_labels:
            result.errors.append(f"{key}: unknown setting.")
            continue
        if raw is None and opts.data_labels[key].default is not None:
            result.errors.append(f"{key}: a value is required.")
            continue
        try:
            value = opts.cast_value(key, raw)
        except SettingsError as e:
            result.errors.append(f"{key}: {e}.")
            continue
        if _same(value, getattr(opts, key)):
            continue
        if opts.is_frozen(key) or key in locked:
            result.errors.append(f"{key}: this setting is read-only here (frozen by a command-line flag).")
            continue
        try:
            opts.set(key, value)
        except SettingsError as e:
            result.errors.append(f"{key}: {e}.")
            continue
        except Exception as e:  # an onchange callback failed; Options.set already restored the old value
            log.warning("Applying setting %s failed", key, exc_info=True)
            result.errors.append(f"{key}: could not be applied ({type(e).__name__}: {e}).")
            continue
        result.changed.append(key)
    if result.changed and settings_file is not None:
        try:
            opts.save(settings_file)
        except OSError as e:
            result.errors.append(f"Saving {settings_file} failed: {e}.")
    return result


def edited_values(opts: Options, shown: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the user changed since the page showed them (`shown`), so Apply never reverts a setting that
    was changed elsewhere (API, another browser) after this page loaded."""

    def normal(key: str, value: Any) -> Any:
        try:
            return opts.cast_value(key, value) if key in opts.data_labels else value
        except SettingsError:
            return value

    return {key: value for key, value in values.items()
            if key not in shown or not _same(normal(key, value), normal(key, shown[key]))}


def locked_settings(opts: Options, args: Any) -> set[str]:
    """Keys the UI shows read-only: frozen by flags, or folder settings under `--hide-ui-dir-config`."""
    hide_dirs = bool(getattr(args, "hide_ui_dir_config", False))
    return {key for key in opts.data_labels if opts.is_frozen(key) or (hide_dirs and key in DIR_SETTINGS)}


# layout ---------------------------------------------------------------------------------------------------------------
def group_by_section(opts: Options, exclude: Iterable[str] = ()) -> list[tuple[str, str, list[str]]]:
    """(section id, title, keys) in declaration order; settings without a section go to "Other" at the end."""
    sections: dict[str, tuple[str, list[str]]] = {}
    excluded = set(exclude)
    for key, info in opts.data_labels.items():
        if key in excluded:
            continue
        section_id, title = info.section if info.section and info.section[0] else OTHER_SECTION
        sections.setdefault(section_id, (title or section_id, []))[1].append(key)
    if OTHER_SECTION[0] in sections:
        sections[OTHER_SECTION[0]] = sections.pop(OTHER_SECTION[0])
    return [(sid, title, keys) for sid, (title, keys) in sections.items()]


def _component_args(info: OptionInfo) -> dict[str, Any]:
    args = info.component_args() if callable(info.component_args) else info.component_args
    return dict(args or {})


def _comment(info: OptionInfo) -> str | None:
    text = re.sub(r"<[^>]+>", "", f"{info.comment_before} {info.comment_after}").strip()
    return text or None


def _default_component(default: Any, args: dict[str, Any]) -> Callable[..., Any]:
    """The field type a setting gets when its declaration names none."""
    if isinstance(default, bool):
        return gr.Checkbox
    if isinstance(default, (int, float)):
        return gr.Slider if "minimum" in args and "maximum" in args else gr.Number
    if isinstance(default, (list, tuple)):
        return gr.Dropdown
    if "choices" in args:
        return gr.Dropdown
    return gr.Textbox


def _field_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def build_setting_component(key: str, info: OptionInfo, value: Any, interactive: bool) -> gr.components.Component:
    """One form field for a setting: the declared component, else one chosen from the default's type."""
    args = _component_args(info)
    component = info.component or _default_component(info.default, args)
    args.setdefault("label", info.label or key)
    args.setdefault("elem_id", f"setting_{key}")
    comment = _comment(info)
    if comment and component not in (gr.HTML, gr.Markdown):
        args.setdefault("info", comment)
    if component is gr.Number and isinstance(info.default, int) and not isinstance(info.default, bool):
        args.setdefault("precision", 0)
    if component is gr.Slider and isinstance(info.default, int):
        args.setdefault("step", 1)
    if component is gr.Dropdown and isinstance(info.default, (list, tuple)):
        args.setdefault("multiselect", True)
        args.setdefault("allow_custom_value", True)
        known = list(args.get("choices") or [])
        args["choices"] = known + [v for v in (value or []) if v not in known]
    elif component is gr.Dropdown and "choices" in args and value not in args["choices"]:
        args.setdefault("allow_custom_value", True)
    return component(value=_field_value(value), interactive=interactive, **args)


def _current_values(opts: Options, keys: list[str]) -> list[Any]:
    return [_field_value(getattr(opts, key)) for key in keys]


def _section_elem_id(section_id: str) -> str:
    return "settings_section_" + re.sub(r"[^A-Za-z0-9_-]", "_", section_id)


def create_settings_tab(ctx: Any) -> None:
    """Fill the open Settings tab: a section list on the left, that section's fields on the right, Apply on top."""
    opts: Options = ctx.opts
    locked = locked_settings(opts, ctx.args)
    sections = group_by_section(opts, exclude=QUICKSETTINGS)
    keys: list[str] = []
    fields: list[gr.components.Component] = []

    with gr.Row():
        apply_button = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
    result = gr.HTML(elem_id="settings_result")
    with gr.Row(elem_id="settings"):
        with gr.Column(scale=1, min_width=180):
            titles = [title for _, title, _ in sections]
            picker = gr.Radio(choices=[*titles, SHOW_ALL_PAGES], value=titles[0] if titles else SHOW_ALL_PAGES,
                              label="Sections", elem_id="settings_sections")
        with gr.Column(scale=5):
            pages = []
            for index, (section_id, title, section_keys) in enumerate(sections):
                with gr.Column(visible=index == 0, elem_id=_section_elem_id(section_id)) as page:
                    gr.Markdown(f"### {html.escape(title)}")
                    for key in section_keys:
                        try:
                            fields.append(build_setting_component(
                                key, opts.data_labels[key], getattr(opts, key), interactive=key not in locked))
                        except Exception:  # an extension's bad component_args must not take the tab down
                            log.warning("Setting %s cannot be shown in the UI", key, exc_info=True)
                            continue
                        keys.append(key)
                pages.append(page)

    shown = gr.State(dict(zip(keys, _current_values(opts, keys), strict=True)))

    def show_section(chosen: str) -> list[Any]:
        return [gr.Column(visible=chosen in (title, SHOW_ALL_PAGES)) for _, title, _ in sections]

    def current() -> list[Any]:
        values = _current_values(opts, keys)
        return [*values, dict(zip(keys, values, strict=True))]

    def apply(shown_values: dict[str, Any], *values: Any) -> list[Any]:
        edited = edited_values(opts, shown_values or {}, dict(zip(keys, values, strict=True)))
        outcome = apply_settings(opts, edited, ctx.paths.settings_file, locked=locked)
        css = "settings-error" if outcome.errors else "settings-ok"
        return [f'<p class="{css}">{html.escape(outcome.message())}</p>', *current()]

    quiet = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
    picker.change(show_section, inputs=picker, outputs=pages, **quiet)
    apply_button.click(apply, inputs=[shown, *fields], outputs=[result, *fields, shown], show_progress="hidden",
                       api_visibility="private")
    root = gr.context.Context.root_block
    if root is not None:  # show the values current at page load (the API may have changed them since start)
        root.load(current, outputs=[*fields, shown], **quiet)
