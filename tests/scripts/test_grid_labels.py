"""``modules.grid_labels``: cells keep their exact pixels inside a labelled grid; labels add bands only where there
is text; margins, titles and prompt-matrix legends."""

from __future__ import annotations

import numpy as np
from PIL import Image

from modules.grid_labels import (
    GridAnnotation,
    annotate_cells,
    draw_grid_annotations,
    grid_with_margin,
    prompt_matrix_annotations,
    titled_grids,
)


def noise_cells(n: int, size: tuple[int, int] = (32, 32)) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def cell_at(grid: Image.Image, box: tuple[int, int], size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return np.asarray(grid.crop((box[0], box[1], box[0] + size[0], box[1] + size[1])))


def has_dark_pixels(region: Image.Image) -> bool:
    return bool((np.asarray(region.convert("L")) < 128).any())


def test_labels_add_bands_and_cells_stay_pixel_exact() -> None:
    cells = noise_cells(4)
    hor = [[GridAnnotation("Steps: 2")], [GridAnnotation("Steps: 3")]]
    ver = [[GridAnnotation("CFG Scale: 3")], [GridAnnotation("CFG Scale: 7")]]
    grid = annotate_cells(cells, 2, 2, hor, ver, margin=4)
    left = grid.width - (2 * 32 + 4)
    top = grid.height - (2 * 32 + 4)
    assert left > 0 and top > 0, "a band of row labels on the left and column labels on top"
    for i, cell in enumerate(cells):
        col, row = i % 2, i // 2
        assert np.array_equal(cell_at(grid, (left + col * 36, top + row * 36)), np.asarray(cell))
    assert has_dark_pixels(grid.crop((left, 0, grid.width, top))), "column labels are drawn"
    assert has_dark_pixels(grid.crop((0, top, left, grid.height))), "row labels are drawn"


def test_no_text_no_band() -> None:
    cells = noise_cells(2)
    grid = annotate_cells(cells, 2, 1, [[GridAnnotation("")], [GridAnnotation("")]], [[]], margin=0)
    assert grid.size == (64, 32)
    assert np.array_equal(np.asarray(grid), np.asarray(grid_with_margin(cells, 2, 1)))
    only_columns = annotate_cells(cells, 2, 1, [[GridAnnotation("a")], [GridAnnotation("b")]], [[]])
    assert only_columns.width == 64 and only_columns.height > 32


def test_different_cell_sizes_share_the_largest_slot() -> None:
    cells = [*noise_cells(1, (32, 32)), *noise_cells(1, (48, 16))]
    grid = grid_with_margin(cells, 2, 1, margin=2)
    assert grid.size == (48 + 2 + 48, 32)
    assert np.array_equal(cell_at(grid, (50, 0), (48, 16)), np.asarray(cells[1]))


def test_a1111_signature_relays_a_plain_grid() -> None:
    cells = noise_cells(2)
    plain = grid_with_margin(cells, 2, 1)
    grid = draw_grid_annotations(plain, 32, 32, [[GridAnnotation("x")], [GridAnnotation("y")]], [[]], margin=6)
    top = grid.height - 32
    assert grid.width == 70 and top > 0
    assert np.array_equal(cell_at(grid, (38, top)), np.asarray(cells[1]))


def test_prompt_matrix_legend_marks_active_parts() -> None:
    hor, ver = prompt_matrix_annotations(["red", "big", "hat"])
    assert len(hor) == 4 and len(ver) == 2, "two parts along the columns, one along the rows"
    assert [[a.is_active for a in col] for col in hor] == [[False, False], [True, False], [False, True], [True, True]]
    assert [a.text for a in hor[3]] == ["red", "big"] and ver[1][0].text == "hat" and ver[1][0].is_active


def test_inactive_labels_are_grey() -> None:
    cells = noise_cells(1)
    active = annotate_cells(cells, 1, 1, [[GridAnnotation("word", True)]], [[]])
    inactive = annotate_cells(cells, 1, 1, [[GridAnnotation("word", False)]], [[]])
    band = (0, 0, 32, active.height - 32)
    assert np.asarray(active.crop(band).convert("L")).min() < 60
    assert np.asarray(inactive.crop(band).convert("L")).min() > 100


def test_titled_grids_side_by_side() -> None:
    grids = [grid_with_margin(noise_cells(2), 2, 1), grid_with_margin(noise_cells(2), 2, 1)]
    combined = titled_grids(grids, ["Sampler: Euler", "Sampler: DDIM"], margin=10)
    assert combined.width == 64 + 10 + 64 and combined.height > 32
    assert titled_grids(grids, None, margin=0).size == (128, 32)
