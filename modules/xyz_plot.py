"""The X/Y/Z plot itself: one generation per combination of axis values, each from a copy of the job, laid out as a
labelled grid per Z value (and those grids side by side when Z has several values).

Everything is checked before the first picture: axis types, values, ranges, choices and the Prompt S/R search
text. Seeds are resolved once, so every cell uses the job's seed (or a seed axis value) unless "Keep -1 for seeds"
is on. The axis that is expensive to change (checkpoint) varies slowest while the cells are made.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from modules import grid_labels, infotext
from modules.errors import InvalidRequest
from modules.processing import Processed, process_images
from modules.rng import get_fixed_seed
from modules.xyz_axes import (
    AxisOption,
    axis_options,
    bind_prompt_sr,
    confirm_prompt_order,
    confirm_prompt_sr,
    find_axis,
    fix_seed_values,
    join_values,
    parse_values,
    split_values,
)

log = logging.getLogger(__name__)

AXIS_NAMES = ("X", "Y", "Z")
SCRIPT_TITLE = "X/Y/Z plot"
MAX_CELLS = 10000


@dataclass
class Axis:
    """One axis of a plot: its type, its values (ranges expanded, seeds fixed) and the text the user wrote."""

    name: str
    option: AxisOption
    values: list[Any]
    text: str
    fixed_seeds: bool = False

    @property
    def is_nothing(self) -> bool:
        return self.option.kind is type(None)

    def labels(self) -> list[list[grid_labels.GridAnnotation]]:
        return [[grid_labels.GridAnnotation(self.option.label_for(v))] for v in self.values]


@dataclass
class PlotOptions:
    draw_legend: bool = True
    include_lone_images: bool = False
    include_sub_grids: bool = False
    keep_random_seeds: bool = False
    vary_seeds: tuple[bool, bool, bool] = (False, False, False)
    margin_size: int = 0


@dataclass
class Cell:
    index: tuple[int, int, int]
    p: Any = None
    processed: Processed | None = None
    images: list[Image.Image] = field(default_factory=list)


def plan_axes(p: Any, is_img2img: bool, specs: Sequence[tuple[Any, Any, Any]], csv_mode: bool,
              keep_random_seeds: bool) -> list[Axis]:
    """X, Y and Z from ``(type, values text, dropdown values)`` triples; raises InvalidRequest on any bad value."""
    options = axis_options(is_img2img)
    axes: list[Axis] = []
    for name, (choice, text, dropdown) in zip(AXIS_NAMES, specs, strict=True):
        option = find_axis(choice, options, name)
        values = parse_values(option, text, dropdown, csv_mode, axis=name)
        fixed = False
        if option.label in ("Seed", "Var. seed") and not keep_random_seeds:
            fixed_values = fix_seed_values(values, keep_random=False)
            fixed, values = fixed_values != values, fixed_values
        if option.label == "Prompt S/R":
            confirm_prompt_sr(p, values, name)
            option = bind_prompt_sr(option, values)
        if option.label == "Prompt order":
            confirm_prompt_order(p, values, name)
        uses_dropdown = option.choices is not None and bool(dropdown) and not csv_mode
        if uses_dropdown:
            written = join_values(split_values(dropdown) if isinstance(dropdown, str) else list(dropdown))
        else:
            written = join_values(text) if isinstance(text, list | tuple) else str(text or "").strip()
        axes.append(Axis(name, option, values, written, fixed))
    total = len(axes[0].values) * len(axes[1].values) * len(axes[2].values)
    if total > MAX_CELLS:
        raise InvalidRequest(f"The plot would have {total} cells (at most {MAX_CELLS}).", "Use fewer values.")
    return axes


def cell_order(axes: Sequence[Axis]) -> list[tuple[int, int, int]]:
    """Every (x, y, z) index; costly axes change least often, otherwise X changes fastest (Z slowest)."""
    slowest_first = sorted(range(3), key=lambda a: (-axes[a].option.cost, -a))
    ranges = [range(len(axes[a].values)) for a in slowest_first]
    order = []
    for combo in itertools.product(*ranges):
        index = [0, 0, 0]
        for a, i in zip(slowest_first, combo, strict=True):
            index[a] = i
        order.append((index[0], index[1], index[2]))
    return order


def cell_copy(p: Any, axes: Sequence[Axis], index: tuple[int, int, int], options: PlotOptions) -> Any:
    """A copy of the job with the cell's axis values set; mutable fields are copied so cells do not leak."""
    pc = copy.copy(p)
    pc.styles = list(p.styles or [])
    pc.extra_generation_params = dict(p.extra_generation_params or {})
    pc.override_settings = dict(p.override_settings or {})
    pc.comments = dict(p.comments or {})
    pc.do_not_save_grid = True
    for axis, i in zip(axes, index, strict=True):
        axis.option.apply(pc, axis.values[i])
    offset = 0
    stride = 1
    for axis, i, vary in zip(axes, index, options.vary_seeds, strict=True):
        if vary:
            offset += i * stride
        stride *= len(axis.values)
    if offset and isinstance(pc.seed, int) and pc.seed != -1:
        pc.seed += offset
    return pc


def _interrupted(state: Any) -> bool:
    return bool(state is not None and (state.interrupted or getattr(state, "stopping_generation", False)))


def make_cells(p: Any, axes: Sequence[Axis], options: PlotOptions) -> dict[tuple[int, int, int], Cell]:
    """Generate every cell (stopping early when the job is interrupted)."""
    order = cell_order(axes)
    state = p.state
    if state is not None:
        state.job_count = len(order) * p.n_iter
    cells: dict[tuple[int, int, int], Cell] = {}
    for number, index in enumerate(order):
        if _interrupted(state):
            break
        if state is not None:
            state.job = f"{SCRIPT_TITLE}: {number + 1} out of {len(order)}"
        pc = cell_copy(p, axes, index, options)
        processed = process_images(pc)
        first = processed.index_of_first_image
        cells[index] = Cell(index, pc, processed, list(processed.images[first:]))
    return cells


def plot_params(axes: Sequence[Axis]) -> dict[str, str]:
    """The infotext entries of a plot's grid (``Script``, ``X Type``, ``X Values``, ...), as A1111 writes them."""
    params = {"Script": SCRIPT_TITLE}
    for axis in axes:
        if axis.is_nothing:
            continue
        params[f"{axis.name} Type"] = axis.option.label
        params[f"{axis.name} Values"] = axis.text
        if axis.fixed_seeds:
            params[f"Fixed {axis.name} Values"] = join_values(axis.values)
    return params


def grid_infotext(cell_text: str, axes: Sequence[Axis]) -> str:
    prompt, negative, params = infotext.split_infotext(cell_text)
    return infotext.create_infotext_text(prompt, negative, {**params, **plot_params(axes)})


def _blank_like(cells: dict[tuple[int, int, int], Cell]) -> Image.Image:
    sizes = [c.images[0].size for c in cells.values() if c.images]
    return Image.new("RGB", sizes[0] if sizes else (64, 64), "white")


def build_result(p: Any, axes: Sequence[Axis], cells: dict[tuple[int, int, int], Cell],
                 options: PlotOptions) -> Processed:
    """Grids (one per Z value, plus the combined one when Z has several), then cells' pictures if asked."""
    made = [c for c in cells.values() if c.processed is not None]
    if not made:
        return Processed(p, [], seed=p.seed if isinstance(p.seed, int) else -1, info="")
    first = cells.get((0, 0, 0)) or made[0]
    blank = _blank_like(cells)
    x, y, z = axes
    sub_grids, sub_infos = [], []
    for iz in range(len(z.values)):
        pictures, texts = [], []
        for iy, ix in itertools.product(range(len(y.values)), range(len(x.values))):
            cell = cells.get((ix, iy, iz))
            pictures.append(cell.images[0] if cell and cell.images else blank)
            if cell and cell.processed is not None and cell.processed.infotexts:
                texts.append(cell.processed.infotexts[cell.processed.index_of_first_image])
        hor = x.labels() if options.draw_legend else [[]]
        ver = y.labels() if options.draw_legend else [[]]
        sub_grids.append(grid_labels.annotate_cells(pictures, len(x.values), len(y.values), hor, ver,
                                                    options.margin_size))
        sub_infos.append(grid_infotext(texts[0] if texts else first.processed.info, axes))

    if len(sub_grids) > 1:
        titles = [z.option.label_for(v) for v in z.values] if options.draw_legend else None
        grids = [grid_labels.titled_grids(sub_grids, titles, options.margin_size)]
        infos = [sub_infos[0]]
        if options.include_sub_grids:
            grids += sub_grids
            infos += sub_infos
    else:
        grids, infos = sub_grids, sub_infos
    for grid, text in zip(grids, infos, strict=True):
        grid.info["parameters"] = text

    lone, lone_infos, lone_prompts, lone_negatives, lone_seeds = [], [], [], [], []
    if options.include_lone_images:
        for index in sorted(cells, key=lambda i: (i[2], i[1], i[0])):
            processed = cells[index].processed
            start = processed.index_of_first_image
            lone += cells[index].images
            lone_infos += processed.infotexts[start:start + len(cells[index].images)]
            lone_prompts += processed.all_prompts[: len(cells[index].images)]
            lone_negatives += processed.all_negative_prompts[: len(cells[index].images)]
            lone_seeds += processed.all_seeds[: len(cells[index].images)]

    save_grids(p, first, grids, infos)
    fp = first.processed
    count = len(grids) + len(lone)
    return Processed(first.p, [*grids, *lone], seed=fp.seed, info=infos[0], subseed=fp.subseed,
                     all_prompts=[fp.all_prompts[0]] * len(grids) + lone_prompts,
                     all_negative_prompts=[fp.all_negative_prompts[0]] * len(grids) + lone_negatives,
                     all_seeds=[fp.seed] * len(grids) + lone_seeds, all_subseeds=[fp.subseed] * count,
                     index_of_first_image=len(grids), infotexts=[*infos, *lone_infos])


def save_grids(p: Any, first: Cell, grids: Sequence[Image.Image], infos: Sequence[str]) -> None:
    """Save the grids like A1111 (the grid folder, "Always save all generated image grids") unless the job said not to
    (``do_not_save_grid``, e.g. an API request with ``save_images`` false)."""
    pc = first.p
    if p.do_not_save_grid or not getattr(pc.opts, "grid_save", True):
        return
    for grid, text in zip(grids, infos, strict=True):
        pc.save_image(grid, first.processed.seed, first.processed.all_prompts[0], text, grid=True)


def run_plot(p: Any, axes: Sequence[Axis], options: PlotOptions) -> Processed:
    """Make every cell and return the plot (see module docstring)."""
    p.resolve_runtime()
    if not options.keep_random_seeds:
        p.seed = get_fixed_seed(p.seed)
        p.subseed = get_fixed_seed(p.subseed)
    cells = make_cells(p, axes, options)
    return build_result(p, axes, cells, options)
