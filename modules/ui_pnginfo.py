"""The PNG Info tab: an uploaded image's infotext, its other metadata and parsed parameters, and the
"Send to txt2img/img2img" buttons (wired by :mod:`modules.ui`, which knows every tab's paste fields).
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
from PIL import Image

from modules import images, infotext
from modules.ui_common import UiEnv, error_html


def read_image_info(path: str | None) -> tuple[str, str, str]:
    """(metadata HTML, infotext, parsed-parameters HTML) of the image file at ``path``."""
    if not path:
        return "", "", ""
    try:
        with Image.open(path) as image:
            image.load()
            geninfo, items = images.read_info_from_image(image)
    except Exception as exc:  # a file that is not an image: say so in the tab
        return error_html(exc), "", ""
    return metadata_html(geninfo, items), geninfo or "", parameters_html(geninfo)


def metadata_html(geninfo: str | None, items: dict[str, Any]) -> str:
    """The infotext first (line breaks kept), then every other text chunk, as A1111 shows them."""
    sections = []
    if geninfo:
        sections.append(("parameters", geninfo))
    sections += [(str(k), v if isinstance(v, str) else repr(v)) for k, v in items.items()]
    if not sections:
        return "<div class='pnginfo-empty'><p>Nothing found in the image.</p></div>"
    body = "".join(f"<div class='pnginfo-item'><p><b>{html.escape(key)}</b></p>"
                   f"<p>{'<br>'.join(html.escape(line) for line in str(value).split(chr(10)))}</p></div>"
                   for key, value in sections)
    return f"<div class='pnginfo'>{body}</div>"


def parameters_html(geninfo: str | None) -> str:
    """The fields written in the infotext, as a two-column table (prompt, negative prompt, then each key)."""
    if not geninfo:
        return ""
    prompt, negative, params = infotext.split_infotext(geninfo)
    rows = [("Prompt", prompt), ("Negative prompt", negative), *params.items()]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows if v != "")
    return f"<table class='pnginfo-parameters'>{cells}</table>"


class PngInfoTab:
    """The tab's components; ``send_to_txt2img`` and ``send_to_img2img`` are wired by :func:`modules.ui.create_ui`."""

    def __init__(self, env: UiEnv) -> None:
        self.env = env

    def build(self) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(variant="panel"):
                self.image = gr.Image(label="Source", type="filepath", image_mode=None, elem_id="pnginfo_image",
                                      sources=["upload", "clipboard"], height=420)
            with gr.Column(variant="panel"):
                self.html_info = gr.HTML(elem_id="pnginfo_html_info")
                self.generation_info = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
                self.parameters = gr.HTML(elem_id="pnginfo_parameters")
                with gr.Row():
                    self.send_to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                    self.send_to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")
        self.image.change(read_image_info, inputs=[self.image],
                          outputs=[self.html_info, self.generation_info, self.parameters], show_progress="hidden",
                          api_visibility="private")


def create_pnginfo_tab(env: UiEnv) -> PngInfoTab:
    """The PNG Info tab's content (call inside its ``gr.Tab``)."""
    tab = PngInfoTab(env)
    tab.build()
    return tab
