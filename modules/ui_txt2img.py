"""The txt2img tab: the generation form plus hires fix, building ``StableDiffusionProcessingTxt2Img``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from modules import scripts
from modules.ui_common import UiEnv
from modules.ui_components import FormRow, InputAccordion
from modules.ui_generation import GenerationForm

HIRES_SAME = "Use same sampler"


def hires_upscaler_names(env: UiEnv) -> list[str]:
    """Latent modes first, then the pixel upscalers (built-ins and models in models/ESRGAN), as A1111 lists them."""
    from modules.upscaling import latent_upscale_modes, list_upscalers

    folder = env.ctx.paths.model_dir("ESRGAN") if hasattr(env.ctx.paths, "model_dir") else None
    pixel = [u.name for u in list_upscalers([folder] if folder is not None else []) if u.name != "None"]
    return [*latent_upscale_modes, *pixel]


class Txt2ImgTab:
    """Builds the tab's components and wires them; ``form`` and the hires fields are the paste targets."""

    def __init__(self, env: UiEnv) -> None:
        self.env = env
        self.form = GenerationForm("txt2img", env)

    def build(self) -> None:
        form = self.form
        form.build_toprow()
        with gr.Row(elem_id="txt2img_extra_tabs", equal_height=False):
            with gr.Column(scale=1, elem_id="txt2img_settings"):
                form.build_sampler()
                form.build_size()
                form.build_cfg()
                form.build_seed()
                self.build_hires()
                form.build_override_settings()
                form.build_scripts(scripts.scripts_txt2img)  # the runner loaded now; a reload rebuilds the UI
            with gr.Column(scale=1):
                form.build_results()
        form.extra_paste_fields += self.hires_paste_fields()
        form.connect(self.make_processing, extra_inputs=self.hires_inputs())

    def build_hires(self) -> None:
        default = self.form.default
        with InputAccordion(False, label="Hires. fix", elem_id="txt2img_hr") as self.enable_hr:
            with FormRow(elem_id="txt2img_hires_fix_row1"):
                names = hires_upscaler_names(self.env)
                self.hr_upscaler = gr.Dropdown(label="Upscaler", elem_id="txt2img_hr_upscaler", choices=names,
                                               value=default("Upscaler", names[0]))
                self.hr_second_pass_steps = gr.Slider(minimum=0, maximum=150, step=1, label="Hires steps",
                                                      elem_id="txt2img_hires_steps",
                                                      value=default("Hires steps", 0))
                self.denoising_strength = gr.Slider(minimum=0.0, maximum=1.0, step=0.01, label="Denoising strength",
                                                    elem_id="txt2img_denoising_strength",
                                                    value=default("Denoising strength", 0.7))
            with FormRow(elem_id="txt2img_hires_fix_row2"):
                self.hr_scale = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Upscale by",
                                          elem_id="txt2img_hr_scale", value=default("Upscale by", 2.0))
                self.hr_resize_x = gr.Slider(minimum=0, maximum=2048, step=8, label="Resize width to",
                                             elem_id="txt2img_hr_resize_x", value=0)
                self.hr_resize_y = gr.Slider(minimum=0, maximum=2048, step=8, label="Resize height to",
                                             elem_id="txt2img_hr_resize_y", value=0)

    def hires_inputs(self) -> set[Any]:
        return {self.enable_hr, self.hr_upscaler, self.hr_second_pass_steps, self.denoising_strength, self.hr_scale,
                self.hr_resize_x, self.hr_resize_y}

    def hires_paste_fields(self) -> list[tuple[Any, Any]]:
        return [
            (self.enable_hr, lambda p: "Denoising strength" in p and any(
                k in p for k in ("Hires upscale", "Hires upscaler", "Hires resize-1"))),
            (self.denoising_strength, "Denoising strength"),
            (self.hr_scale, "Hires upscale"),
            (self.hr_upscaler, "Hires upscaler"),
            (self.hr_second_pass_steps, "Hires steps"),
            (self.hr_resize_x, "Hires resize-1"),
            (self.hr_resize_y, "Hires resize-2"),
        ]

    def make_processing(self, data: dict[Any, Any]) -> Any:
        from modules.processing import StableDiffusionProcessingTxt2Img

        kwargs = self.form.processing_kwargs(data)
        enable_hr = bool(data[self.enable_hr])
        kwargs.update(enable_hr=enable_hr, denoising_strength=float(data[self.denoising_strength]),
                      hr_scale=float(data[self.hr_scale]), hr_upscaler=data[self.hr_upscaler],
                      hr_second_pass_steps=int(data[self.hr_second_pass_steps]),
                      hr_resize_x=int(data[self.hr_resize_x]), hr_resize_y=int(data[self.hr_resize_y]))
        if not enable_hr:
            kwargs.pop("denoising_strength")
        return StableDiffusionProcessingTxt2Img(**kwargs)


def create_txt2img_tab(env: UiEnv) -> Txt2ImgTab:
    """The txt2img tab's content (call inside its ``gr.Tab``)."""
    tab = Txt2ImgTab(env)
    tab.build()
    return tab
