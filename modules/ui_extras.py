"""The Extras tab: upscale one picture or a batch with A1111's upscalers, save the results with their infotext.

The handler only collects the form into `postprocessing.ExtrasSettings` and runs `postprocessing.run_extras` on the
job queue (so it never runs beside a generation); resizing rules and the infotext live in `modules.postprocessing`.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules import images
from modules.errors import AtelierError, InvalidRequest
from modules.postprocessing import ExtrasSettings, run_extras
from modules.upscaling import list_upscalers

log = logging.getLogger(__name__)

PNGINFO_SECTION = "extras"
"""The PNG text chunk A1111 writes the Extras infotext to (the image's own `parameters` chunk is kept)."""

SINGLE, BATCH = 0, 1
SCALE_BY, SCALE_TO = 0, 1


@dataclass
class ExtrasOutput:
    """One processed picture: the result, its infotext and where it was saved (None when saving is off)."""

    image: Image.Image
    infotext: str
    saved_to: str | None


def upscaler_dirs(ctx: Any) -> list[Path]:
    """Folders searched for upscaler model files (A1111's `models/ESRGAN`)."""
    return [Path(ctx.paths.model_dir("ESRGAN"))]


def upscaler_names(ctx: Any) -> list[str]:
    """Built-in upscalers, then model files, by the names A1111 shows."""
    return [u.name for u in list_upscalers(upscaler_dirs(ctx))]


def extras_output_dir(ctx: Any) -> Path:
    """`outdir_samples` or `outdir_extras_samples` (default outputs/extras-images); relative means in the data dir."""
    opts = ctx.opts
    folder = Path(getattr(opts, "outdir_samples", "") or getattr(opts, "outdir_extras_samples", "")
                  or "outputs/extras-images")
    return folder if folder.is_absolute() else Path(ctx.paths.data_dir) / folder


def _existing_text_chunks(image: Image.Image) -> dict[str, Any]:
    return {k: v for k, v in (image.info or {}).items() if isinstance(v, str) and k != PNGINFO_SECTION}


def process_images(ctx: Any, pictures: Sequence[tuple[Image.Image, str]],
                   settings: ExtrasSettings) -> list[ExtrasOutput]:
    """Upscale each (image, base name) and save it unless `samples_save` is off. Runs on the job queue's worker."""
    save = bool(getattr(ctx.opts, "samples_save", True))
    outputs = []
    for image, basename in pictures:
        result, infotext = run_extras(image, settings, upscaler_dirs(ctx))
        saved_to = None
        if save:
            saved_to, _ = images.save_image(
                result, str(extras_output_dir(ctx)), basename, extension=str(ctx.opts.samples_format or "png"),
                info=infotext, short_filename=True, no_prompt=True, pnginfo_section_name=PNGINFO_SECTION,
                existing_info=_existing_text_chunks(image), opts=ctx.opts)
        outputs.append(ExtrasOutput(result, infotext, saved_to))
    return outputs


def _open_uploaded(files: Sequence[Any] | None) -> list[tuple[Image.Image, str]]:
    """The uploaded batch as PIL images; a file that is not a picture is an InvalidRequest naming it."""
    pictures = []
    for item in files or []:
        path = getattr(item, "name", item)
        try:
            with Image.open(path) as opened:
                opened.load()
                pictures.append((opened.copy(), ""))
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidRequest(f"{os.path.basename(str(path))} is not an image Atelier can read ({e}).",
                                 "Upload PNG, JPEG or WebP files.") from e
    return pictures


def _info_html(outputs: list[ExtrasOutput]) -> str:
    parts = []
    for out in outputs:
        where = f'<br><span class="extras-saved">Saved: {html.escape(out.saved_to)}</span>' if out.saved_to else ""
        parts.append(f'<p class="extras-infotext">{html.escape(out.infotext)}{where}</p>')
    return "".join(parts)


def _error_html(message: str) -> str:
    return f'<p class="extras-error" style="color: var(--error-text-color, #c00)">{html.escape(message)}</p>'


def run_extras_ui(ctx: Any, source_tab: int, image: Image.Image | None, files: Sequence[Any] | None,
                  resize_mode: int, upscaling_resize: float, resize_w: float, resize_h: float, crop: bool,
                  upscaler_1: str, upscaler_2: str, upscaler_2_visibility: float) -> tuple[list[Any], str]:
    """The Generate button: (gallery images, info HTML); every failure becomes a visible message."""
    try:
        if source_tab == BATCH:
            pictures = _open_uploaded(files)
        else:
            pictures = [(image, "")] if image is not None else []
        if not pictures:
            raise InvalidRequest("No image to process.",
                                 "Upload an image (Single Image) or several files (Batch Process).")
        settings = ExtrasSettings(
            resize_mode=int(resize_mode), upscaling_resize=float(upscaling_resize or 0),
            upscaling_resize_w=int(resize_w or 0), upscaling_resize_h=int(resize_h or 0), upscaling_crop=bool(crop),
            upscaler_1=upscaler_1 or "None", upscaler_2=upscaler_2 or "None",
            extras_upscaler_2_visibility=float(upscaler_2_visibility or 0))
        outputs = ctx.queue.submit(lambda: process_images(ctx, pictures, settings), kind="extras",
                                   description="extras").wait()
    except AtelierError as e:
        return [], _error_html(f"Error: {e}")
    except Exception as e:  # anything else: say what failed, keep the traceback for the log only
        log.exception("Extras failed")
        return [], _error_html(f"Error: {type(e).__name__}: {e}")
    return [out.image for out in outputs], _info_html(outputs)


def create_extras_tab(ctx: Any) -> None:
    """Fill the open Extras tab: input (single or batch), resize (scale by / to), two upscalers, results."""
    names = upscaler_names(ctx)
    with gr.Row(equal_height=False):
        with gr.Column(variant="panel"):
            source_tab = gr.State(SINGLE)
            resize_mode = gr.State(SCALE_BY)
            with gr.Tabs(elem_id="mode_extras"):
                with gr.Tab("Single Image", id="single_image", elem_id="extras_single_tab") as tab_single:
                    image = gr.Image(label="Source", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                     elem_id="extras_image")
                with gr.Tab("Batch Process", id="batch_process", elem_id="extras_batch_process_tab") as tab_batch:
                    files = gr.File(label="Batch Process", file_count="multiple", file_types=["image"],
                                    elem_id="extras_image_batch")
            with gr.Tabs(elem_id="extras_resize_mode"):
                with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as tab_scale_by:
                    upscaling_resize = gr.Slider(minimum=1.0, maximum=8.0, step=0.05, value=2.0, label="Resize",
                                                 elem_id="extras_upscaling_resize")
                with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as tab_scale_to, gr.Row():
                    resize_w = gr.Number(label="Width", value=512, precision=0, elem_id="extras_upscaling_resize_w")
                    resize_h = gr.Number(label="Height", value=512, precision=0,
                                         elem_id="extras_upscaling_resize_h")
                    crop = gr.Checkbox(label="Crop to fit", value=True, elem_id="extras_upscaling_crop")
            with gr.Row():
                upscaler_1 = gr.Dropdown(label="Upscaler 1", choices=names, value="None", elem_id="extras_upscaler_1")
                upscaler_2 = gr.Dropdown(label="Upscaler 2", choices=names, value="None", elem_id="extras_upscaler_2")
                refresh = gr.Button("↻", elem_id="extras_upscaler_refresh", scale=0, min_width=40)
            upscaler_2_visibility = gr.Slider(minimum=0.0, maximum=1.0, step=0.001, value=0.0,
                                              label="Upscaler 2 visibility", elem_id="extras_upscaler_2_visibility")
            generate = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column(variant="panel"):
            gallery = gr.Gallery(label="Result", show_label=False, columns=2, format="png", interactive=False,
                                 elem_id="extras_gallery")
            info = gr.HTML(elem_id="html_info_extras")

    quiet = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
    tab_single.select(lambda: SINGLE, outputs=source_tab, **quiet)
    tab_batch.select(lambda: BATCH, outputs=source_tab, **quiet)
    tab_scale_by.select(lambda: SCALE_BY, outputs=resize_mode, **quiet)
    tab_scale_to.select(lambda: SCALE_TO, outputs=resize_mode, **quiet)

    def refresh_upscalers(first: str, second: str) -> tuple[Any, Any]:
        choices = upscaler_names(ctx)
        return (gr.Dropdown(choices=choices, value=first if first in choices else "None"),
                gr.Dropdown(choices=choices, value=second if second in choices else "None"))

    def generate_clicked(*values: Any) -> tuple[list[Any], str]:
        return run_extras_ui(ctx, *values)

    refresh.click(refresh_upscalers, inputs=[upscaler_1, upscaler_2], outputs=[upscaler_1, upscaler_2],
                  show_progress="hidden", api_visibility="private")
    generate.click(generate_clicked,
                   inputs=[source_tab, image, files, resize_mode, upscaling_resize, resize_w, resize_h, crop,
                           upscaler_1, upscaler_2, upscaler_2_visibility],
                   outputs=[gallery, info], api_visibility="private")
