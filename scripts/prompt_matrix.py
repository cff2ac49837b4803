"""Built-in selectable script "Prompt matrix": ``base | a | b | c`` makes one picture for every subset of the parts
after the first (2^(n-1) pictures) and a grid whose column and row labels show which parts each picture has.

Arguments (A1111's order): Put variable parts at start of prompt, Use different seed for each picture, Select prompt
("positive" or "negative"), Select joining char ("comma" or "space"), Grid margins (px).
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from modules import grid_labels, scripts
from modules.errors import InvalidRequest
from modules.processing import fix_seed, process_images

PROMPT_TYPES = ("positive", "negative")
DELIMITERS = {"comma": ", ", "space": " "}
MAX_VARIABLE_PARTS = 12


def clean_part(text: str) -> str:
    return text.strip().strip(",").strip()


def matrix_prompts(prompt: str, put_at_start: bool = False, delimiter: str = ", ") -> tuple[list[str], list[str]]:
    """(the cleaned parts, every combination's prompt); combination ``k`` has variable part ``n`` when bit ``n`` of
    ``k`` is set, so the first half of the parts changes along the grid's columns, the rest along its rows."""
    parts = [clean_part(t) for t in str(prompt).split("|")]
    base, variable = parts[0], parts[1:]
    if len(variable) > MAX_VARIABLE_PARTS:
        raise InvalidRequest(f"The prompt matrix has {len(variable)} variable parts, which would make "
                             f"{2 ** len(variable)} pictures (at most {2 ** MAX_VARIABLE_PARTS}).",
                             f"Use at most {MAX_VARIABLE_PARTS} '|' separators.")
    prompts = []
    for combination in range(1 << len(variable)):
        selected = [text for n, text in enumerate(variable) if combination & (1 << n)]
        ordered = [*selected, base] if put_at_start else [base, *selected]
        prompts.append(delimiter.join(t for t in ordered if t))
    return parts, prompts


def grid_shape(variable_parts: int) -> tuple[int, int]:
    """(columns, rows): 2^ceil(n/2) by 2^floor(n/2)."""
    rows = 1 << (variable_parts // 2)
    return (1 << variable_parts) // rows, rows


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> list:
        gr.HTML("<p>Separate the parts with |: the first part is in every picture, the others in every "
                "combination.</p>")
        with gr.Row():
            put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                       elem_id=self.elem_id("put_at_start"))
            different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                          elem_id=self.elem_id("different_seeds"))
        with gr.Row():
            prompt_type = gr.Radio(list(PROMPT_TYPES), label="Select prompt", value="positive",
                                   elem_id=self.elem_id("prompt_type"))
            variations_delimiter = gr.Radio(list(DELIMITERS), label="Select joining char", value="comma",
                                            elem_id=self.elem_id("variations_delimiter"))
        margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p: Any, put_at_start: bool = False, different_seeds: bool = False, prompt_type: str = "positive",
            variations_delimiter: str = "comma", margin_size: float = 0) -> Any:
        if prompt_type not in PROMPT_TYPES:
            raise InvalidRequest(f"Prompt matrix: prompt type {prompt_type!r} is not positive or negative.",
                                 'Use "positive" or "negative".')
        if variations_delimiter not in DELIMITERS:
            raise InvalidRequest(f"Prompt matrix: joining char {variations_delimiter!r} is not comma or space.",
                                 'Use "comma" or "space".')
        positive = prompt_type == "positive"
        original = p.prompt if positive else p.negative_prompt
        original = original[0] if isinstance(original, list) else str(original or "")
        parts, prompts = matrix_prompts(original, bool(put_at_start), DELIMITERS[variations_delimiter])

        save_grid = not p.do_not_save_grid
        fix_seed(p)
        p.n_iter = math.ceil(len(prompts) / p.batch_size)
        p.do_not_save_grid = True
        p.prompt_for_display = p.prompt if isinstance(p.prompt, str) else None
        p.seed = [p.seed + (i if different_seeds else 0) for i in range(len(prompts))]
        if positive:
            p.prompt = prompts
        else:
            p.negative_prompt = prompts
        processed = process_images(p)

        cells = processed.images[processed.index_of_first_image:]
        if not cells:
            return processed
        cols, rows = grid_shape(len(parts) - 1)
        hor, ver = grid_labels.prompt_matrix_annotations(parts[1:])
        grid = grid_labels.annotate_cells(cells, cols, rows, hor, ver, max(0, int(margin_size or 0)))
        info = processed.infotexts[processed.index_of_first_image] if processed.infotexts else processed.info
        grid.info["parameters"] = info
        processed.images.insert(0, grid)
        processed.infotexts.insert(0, info)
        processed.index_of_first_image = 1
        if save_grid and getattr(p.opts, "grid_save", True):
            p.save_image(grid, processed.seed, original, info, grid=True)
        return processed
