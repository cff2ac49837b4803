"""The img2img tab: an uploaded image (img2img), a brush-drawn mask (Inpaint) or an uploaded mask (Inpaint upload),
with resize mode, denoising and the inpaint settings; builds ``StableDiffusionProcessingImg2Img``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from modules import scripts
from modules.errors import InvalidRequest
from modules.ui_common import UiEnv
from modules.ui_components import FormGroup, FormRow
from modules.ui_generation import GenerationForm

# A1111's img2img mode numbers (1, 3 and 5 are its sketch, inpaint sketch and batch modes, not offered here).
MODE_IMG2IMG, MODE_INPAINT, MODE_INPAINT_UPLOAD = 0, 2, 4
RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
MASKED_CONTENT = ["fill", "original", "latent noise", "latent nothing"]
INPAINT_AREAS = ["Whole picture", "Only masked"]


def mask_from_editor(value: dict[str, Any] | None) -> tuple[Image.Image, Image.Image]:
    """(picture, mask) from an ``ImageEditor`` value: the background is the picture; every pixel drawn on any layer
    is white in the mask."""
    background = (value or {}).get("background")
    if background is None:
        raise InvalidRequest("No image to inpaint.", "Upload an image in the Inpaint tab, then paint over the area "
                                                     "to change.")
    picture = background.convert("RGB")
    alpha = np.zeros((picture.height, picture.width), dtype=np.uint8)
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        drawn = np.asarray(layer.convert("RGBA").resize(picture.size))[..., 3]
        alpha = np.maximum(alpha, drawn)
    if not alpha.any():
        raise InvalidRequest("The mask is empty.", "Paint over the area to change with the brush.")
    return picture, Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8), mode="L")


def uploaded_mask(mask: Image.Image) -> Image.Image:
    """An uploaded mask as "L": its alpha where it has transparency, else its brightness (white = change)."""
    if mask.mode in ("RGBA", "LA") and np.asarray(mask.getchannel("A")).min() < 255:
        return mask.getchannel("A")
    return mask.convert("L")


class Img2ImgTab:
    """Builds the tab; ``init_img`` is the paste target for images sent from PNG Info."""

    def __init__(self, env: UiEnv) -> None:
        self.env = env
        self.form = GenerationForm("img2img", env)

    def build(self) -> None:
        form = self.form
        form.build_toprow()
        with gr.Row(elem_id="img2img_extra_tabs", equal_height=False):
            with gr.Column(scale=1, elem_id="img2img_settings"):
                self.build_inputs()
                self.resize_mode = gr.Radio(label="Resize mode", choices=RESIZE_MODES, type="index",
                                            value=RESIZE_MODES[0], elem_id="resize_mode")
                form.build_sampler()
                form.build_size()
                form.build_cfg()
                self.denoising_strength = gr.Slider(minimum=0.0, maximum=1.0, step=0.01, label="Denoising strength",
                                                    elem_id="img2img_denoising_strength",
                                                    value=form.default("Denoising strength", 0.75))
                form.build_seed()
                self.build_inpaint_settings()
                form.build_override_settings()
                form.build_scripts(scripts.scripts_img2img)  # the runner loaded now; a reload rebuilds the UI
            with gr.Column(scale=1):
                form.build_results()
        form.extra_paste_fields += [(self.denoising_strength, "Denoising strength"),
                                    (self.mask_blur, "Mask blur"),
                                    (self.inpainting_fill, lambda p: _choice(MASKED_CONTENT, p.get("Masked content"))),
                                    (self.inpaint_full_res, lambda p: _choice(INPAINT_AREAS, p.get("Inpaint area"))),
                                    (self.inpaint_padding, "Masked area padding")]
        form.connect(self.make_processing, extra_inputs={
            self.mode, self.init_img, self.inpaint_editor, self.inpaint_base, self.inpaint_mask, self.resize_mode,
            self.denoising_strength, self.mask_blur, self.mask_mode, self.inpainting_fill, self.inpaint_full_res,
            self.inpaint_padding})

    def build_inputs(self) -> None:
        self.mode = gr.State(MODE_IMG2IMG)
        with gr.Tabs(elem_id="mode_img2img") as self.mode_tabs:
            with gr.Tab("img2img", id="img2img", elem_id="img2img_img2img_tab") as tab_img2img:
                self.init_img = gr.Image(label="Image for img2img", type="pil", image_mode="RGBA",
                                         elem_id="img2img_image", sources=["upload", "clipboard"], height=360)
            with gr.Tab("Inpaint", id="inpaint", elem_id="img2img_inpaint_tab") as tab_inpaint:
                self.inpaint_editor = gr.ImageEditor(
                    label="Image for inpainting with mask", type="pil", elem_id="img2maskimg", height=420,
                    sources=["upload", "clipboard"], layers=False, transforms=(),
                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24))
            with gr.Tab("Inpaint upload", id="inpaint_upload", elem_id="img2img_inpaint_upload_tab") as tab_upload:
                self.inpaint_base = gr.Image(label="Image for img2img", type="pil", elem_id="img_inpaint_base",
                                             sources=["upload", "clipboard"], height=300)
                self.inpaint_mask = gr.Image(label="Mask", type="pil", image_mode="RGBA", elem_id="img_inpaint_mask",
                                             sources=["upload", "clipboard"], height=300)
        self.mode_tabs_by_mode = {MODE_IMG2IMG: tab_img2img, MODE_INPAINT: tab_inpaint,
                                  MODE_INPAINT_UPLOAD: tab_upload}

    def build_inpaint_settings(self) -> None:
        with FormGroup(visible=False, elem_id="inpaint_controls") as self.inpaint_controls:
            with FormRow():
                self.mask_blur = gr.Slider(minimum=0, maximum=64, step=1, label="Mask blur", value=4,
                                           elem_id="img2img_mask_blur")
                self.mask_mode = gr.Radio(label="Mask mode", choices=MASK_MODES, value=MASK_MODES[0], type="index",
                                          elem_id="img2img_mask_mode")
            self.inpainting_fill = gr.Radio(label="Masked content", choices=MASKED_CONTENT, value="original",
                                            type="index", elem_id="img2img_inpainting_fill")
            with FormRow():
                self.inpaint_full_res = gr.Radio(label="Inpaint area", choices=INPAINT_AREAS, type="index",
                                                 value=INPAINT_AREAS[0], elem_id="img2img_inpaint_full_res")
                self.inpaint_padding = gr.Slider(minimum=0, maximum=256, step=4, value=32,
                                                 label="Only masked padding, pixels",
                                                 elem_id="img2img_inpaint_full_res_padding")
        for mode, tab in self.mode_tabs_by_mode.items():
            tab.select(lambda mode=mode: (mode, gr.Group(visible=mode != MODE_IMG2IMG)),
                       outputs=[self.mode, self.inpaint_controls], show_progress="hidden", api_visibility="private")

    def pictures(self, data: dict[Any, Any]) -> tuple[Image.Image, Image.Image | None]:
        """(init image, mask or None) of the selected mode."""
        mode = data[self.mode]
        if mode == MODE_INPAINT:
            return mask_from_editor(data[self.inpaint_editor])
        if mode == MODE_INPAINT_UPLOAD:
            base, mask = data[self.inpaint_base], data[self.inpaint_mask]
            if base is None or mask is None:
                raise InvalidRequest("Inpaint upload needs both an image and a mask.",
                                     "Upload the picture and a black-and-white mask (white = change).")
            return base.convert("RGB"), uploaded_mask(mask)
        image = data[self.init_img]
        if image is None:
            raise InvalidRequest("No image for img2img.", "Upload an image in the img2img tab.")
        return _flatten(image), None

    def make_processing(self, data: dict[Any, Any]) -> Any:
        from modules.processing import StableDiffusionProcessingImg2Img

        kwargs = self.form.processing_kwargs(data)
        image, mask = self.pictures(data)
        kwargs.update(init_images=[image], mask=mask, resize_mode=int(data[self.resize_mode] or 0),
                      denoising_strength=float(data[self.denoising_strength]))
        if mask is not None:
            kwargs.update(mask_blur=int(data[self.mask_blur]), inpainting_mask_invert=int(data[self.mask_mode] or 0),
                          inpainting_fill=int(data[self.inpainting_fill] or 0),
                          inpaint_full_res=bool(data[self.inpaint_full_res]),
                          inpaint_full_res_padding=int(data[self.inpaint_padding]))
        return StableDiffusionProcessingImg2Img(**kwargs)


def _flatten(image: Image.Image) -> Image.Image:
    """Transparent areas become white, as A1111 flattens uploads (``img2img_background_color``)."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _choice(choices: list[str], value: Any) -> str | None:
    """A radio's value as pasted: the choice's text when the infotext names a known one."""
    return value if value in choices else None


def create_img2img_tab(env: UiEnv) -> Img2ImgTab:
    """The img2img tab's content (call inside its ``gr.Tab``)."""
    tab = Img2ImgTab(env)
    tab.build()
    return tab
