"""Built-in selectable script "X/Y/Z plot": the same job over up to three axes of changing parameters, as a
labelled grid. The plotting lives in ``modules.xyz_plot`` and the axis types in ``modules.xyz_axes``; this file is
the script's controls and its ``run``.

The arguments (``script_args`` through the API) are A1111's, in its order: X type, X values (text), X values
(dropdown list), the same for Y and Z, Draw legend, Include Sub Images, Include Sub Grids, Keep -1 for seeds, Vary
seeds for X, Y, Z, Grid margins (px), Use text inputs instead of dropdowns. An axis type is its index in this
tab's list (``GET /sdapi/v1/script-info`` shows the list) or its label, e.g. "Steps".
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from modules import scripts
from modules.xyz_axes import axis_options, join_values
from modules.xyz_plot import SCRIPT_TITLE, PlotOptions, plan_axes, run_plot


class Script(scripts.Script):
    def title(self) -> str:
        return SCRIPT_TITLE

    def ui(self, is_img2img: bool) -> list:
        options = axis_options(is_img2img)
        labels = [o.label for o in options]
        rows = []
        for name, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
            with gr.Row():
                kind = gr.Dropdown(label=f"{name.upper()} type", choices=labels, value=default, type="index",
                                   elem_id=self.elem_id(f"{name}_type"))
                text = gr.Textbox(label=f"{name.upper()} values", lines=1, elem_id=self.elem_id(f"{name}_values"))
                listed = gr.Dropdown(label=f"{name.upper()} values", choices=[], value=[], multiselect=True,
                                     visible=False, interactive=True,
                                     elem_id=self.elem_id(f"{name}_values_dropdown"))
            rows.append((kind, text, listed))

        with gr.Row():
            draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
            no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False,
                                         elem_id=self.elem_id("no_fixed_seeds"))
            vary = [gr.Checkbox(label=f"Vary seeds for {n}", value=False, elem_id=self.elem_id(f"vary_seeds_{n}"))
                    for n in "xyz"]
        with gr.Row():
            include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                              elem_id=self.elem_id("include_lone_images"))
            include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                            elem_id=self.elem_id("include_sub_grids"))
            csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                   elem_id=self.elem_id("csv_mode"))
        margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                elem_id=self.elem_id("margin_size"))

        def show_values(index: int | None, text_mode: bool) -> list:
            option = options[index or 0]
            choices = option.choices() if option.choices is not None else None
            with_dropdown = choices is not None and not text_mode
            return [gr.update(visible=not with_dropdown),
                    gr.update(visible=with_dropdown, choices=choices or [], value=[])]

        for kind, text, listed in rows:
            kind.change(show_values, inputs=[kind, csv_mode], outputs=[text, listed])

        def switch_mode(text_mode: bool, *values: Any) -> list:
            updates = []
            for index, _text, listed in zip(values[0::3], values[1::3], values[2::3], strict=True):
                option = options[index or 0]
                if option.choices is None:
                    updates += [gr.update(), gr.update()]
                elif text_mode:
                    updates += [gr.update(visible=True, value=join_values(listed or [])), gr.update(visible=False)]
                else:
                    updates += [gr.update(visible=False), gr.update(visible=True, choices=option.choices())]
            return updates

        all_inputs = [c for row in rows for c in row]
        csv_mode.change(switch_mode, inputs=[csv_mode, *all_inputs],
                        outputs=[c for _, text, listed in rows for c in (text, listed)])

        (x_type, x_values, x_dropdown), (y_type, y_values, y_dropdown), (z_type, z_values, z_dropdown) = rows
        self.infotext_fields = [(x_type, "X Type"), (x_values, "X Values"), (y_type, "Y Type"),
                                (y_values, "Y Values"), (z_type, "Z Type"), (z_values, "Z Values")]
        return [x_type, x_values, x_dropdown, y_type, y_values, y_dropdown, z_type, z_values, z_dropdown,
                draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, *vary, margin_size, csv_mode]

    def run(self, p: Any, x_type: Any = "Nothing", x_values: str = "", x_values_dropdown: list | None = None,
            y_type: Any = "Nothing", y_values: str = "", y_values_dropdown: list | None = None,
            z_type: Any = "Nothing", z_values: str = "", z_values_dropdown: list | None = None,
            draw_legend: bool = True, include_lone_images: bool = False, include_sub_grids: bool = False,
            no_fixed_seeds: bool = False, vary_seeds_x: bool = False, vary_seeds_y: bool = False,
            vary_seeds_z: bool = False, margin_size: float = 0, csv_mode: bool = False) -> Any:
        specs = [(x_type, x_values, x_values_dropdown), (y_type, y_values, y_values_dropdown),
                 (z_type, z_values, z_values_dropdown)]
        axes = plan_axes(p, bool(self.is_img2img), specs, bool(csv_mode), bool(no_fixed_seeds))
        options = PlotOptions(draw_legend=bool(draw_legend), include_lone_images=bool(include_lone_images),
                              include_sub_grids=bool(include_sub_grids), keep_random_seeds=bool(no_fixed_seeds),
                              vary_seeds=(bool(vary_seeds_x), bool(vary_seeds_y), bool(vary_seeds_z)),
                              margin_size=max(0, int(margin_size or 0)))
        return run_plot(p, axes, options)
