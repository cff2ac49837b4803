"""Labelled image grids for the comparison scripts (X/Y/Z plot, prompt matrix): cells laid out with a margin, a band
of column labels on top and row labels on the left, and several grids side by side under their own titles.

A1111 keeps these helpers in ``modules.images`` (``GridAnnotation``, ``draw_grid_annotations``,
``draw_prompt_matrix``); the same names and arguments live here so scripts written against those work. Text is
drawn with PIL's bundled scalable font, so no font file has to be installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = "white"
TEXT_COLOR = (0, 0, 0)
INACTIVE_COLOR = (153, 153, 153)
MIN_FONT_SIZE = 10
MIN_LEFT_BAND = 64


@dataclass
class GridAnnotation:
    """One label line of a grid legend; inactive ones (a prompt-matrix part left out) are grey and struck through."""

    text: str = ""
    is_active: bool = True


@lru_cache(maxsize=16)
def legend_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's bundled font at ``size`` pixels (DejaVu Sans when PIL was built without its own scalable font)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ValueError):
        try:
            return ImageFont.truetype("DejaVuSans.ttf", size)
        except OSError:
            return ImageFont.load_default()


def font_size_for(width: int, height: int) -> int:
    """A1111's rule of thumb ((w + h) / 25) with a floor, so labels stay readable on small pictures."""
    return max(MIN_FONT_SIZE, (width + height) // 25)


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> float:
    return draw.textlength(text, font=font)


def wrap_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, max_width: float) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; a single word wider than that gets a line of its own."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if current and _text_width(draw, candidate, font) > max_width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


@dataclass
class _Block:
    """The wrapped lines of one column or row label, each with its active flag."""

    lines: list[tuple[str, bool]]

    def height(self, line_height: int) -> int:
        return len(self.lines) * line_height


def _layout(draw: ImageDraw.ImageDraw, annotations: Sequence[GridAnnotation], font: ImageFont.ImageFont,
            max_width: float) -> _Block:
    lines: list[tuple[str, bool]] = []
    for annotation in annotations:
        lines += [(line, annotation.is_active) for line in wrap_text(draw, annotation.text, font, max_width)]
    return _Block(lines)


def _draw_block(draw: ImageDraw.ImageDraw, block: _Block, center_x: float, center_y: float,
                font: ImageFont.ImageFont, line_height: int) -> None:
    y = center_y - block.height(line_height) / 2
    for line, active in block.lines:
        color = TEXT_COLOR if active else INACTIVE_COLOR
        width = _text_width(draw, line, font)
        x = center_x - width / 2
        draw.text((x, y), line, font=font, fill=color)
        if not active and line:
            strike_y = y + line_height / 2
            draw.line((x, strike_y, x + width, strike_y), fill=color, width=max(1, line_height // 12))
        y += line_height


def cell_slot(cells: Sequence[Image.Image]) -> tuple[int, int]:
    """The size of one grid slot: the largest cell (cells of a Size axis differ; smaller ones sit top-left)."""
    return max(c.width for c in cells), max(c.height for c in cells)


def grid_with_margin(cells: Sequence[Image.Image], cols: int, rows: int, margin: int = 0,
                     offset: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None,
                     slot: tuple[int, int] | None = None) -> Image.Image:
    """Cells row by row into ``cols`` x ``rows`` slots, ``margin`` pixels apart, starting at ``offset``."""
    slot_w, slot_h = slot or cell_slot(cells)
    left, top = offset
    width = left + cols * slot_w + (cols - 1) * margin
    height = top + rows * slot_h + (rows - 1) * margin
    grid = Image.new("RGB", size or (width, height), BACKGROUND)
    for i, cell in enumerate(cells[: cols * rows]):
        col, row = i % cols, i // cols
        grid.paste(cell.convert("RGB"), (left + col * (slot_w + margin), top + row * (slot_h + margin)))
    return grid


def annotate_cells(cells: Sequence[Image.Image], cols: int, rows: int,
                   hor_texts: Sequence[Sequence[GridAnnotation]], ver_texts: Sequence[Sequence[GridAnnotation]],
                   margin: int = 0) -> Image.Image:
    """A grid of ``cells`` with column labels (``hor_texts[col]``) above and row labels (``ver_texts[row]``) on
    the left; a band is only added when one of its labels has text."""
    slot_w, slot_h = cell_slot(cells)
    font_size = font_size_for(slot_w, slot_h)
    font = legend_font(font_size)
    line_height = int(font_size * 1.25)
    padding = font_size // 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    has_hor = any(a.text for texts in hor_texts for a in texts)
    has_ver = any(a.text for texts in ver_texts for a in texts)
    hor_blocks = [_layout(measure, texts, font, slot_w) for texts in hor_texts] if has_hor else []
    left_width = max(slot_w * 3 // 4, MIN_LEFT_BAND)
    ver_blocks = [_layout(measure, texts, font, left_width - 2 * padding) for texts in ver_texts] if has_ver else []

    top = max(b.height(line_height) for b in hor_blocks) + 2 * padding if hor_blocks else 0
    left = 0
    if ver_blocks:
        widest = max((_text_width(measure, line, font) for b in ver_blocks for line, _ in b.lines), default=0)
        left = max(left_width, math.ceil(widest) + 2 * padding)

    grid = grid_with_margin(cells, cols, rows, margin, offset=(left, top), slot=(slot_w, slot_h))
    draw = ImageDraw.Draw(grid)
    for col, block in enumerate(hor_blocks[:cols]):
        draw_x = left + col * (slot_w + margin) + slot_w / 2
        _draw_block(draw, block, draw_x, top / 2, font, line_height)
    for row, block in enumerate(ver_blocks[:rows]):
        draw_y = top + row * (slot_h + margin) + slot_h / 2
        _draw_block(draw, block, left / 2, draw_y, font, line_height)
    return grid


def split_cells(im: Image.Image, width: int, height: int) -> tuple[list[Image.Image], int, int]:
    """The cells of a plain (margin-less) grid of ``width`` x ``height`` pictures, and its columns and rows."""
    cols, rows = max(1, im.width // width), max(1, im.height // height)
    cells = [im.crop((c * width, r * height, (c + 1) * width, (r + 1) * height))
             for r in range(rows) for c in range(cols)]
    return cells, cols, rows


def draw_grid_annotations(im: Image.Image, width: int, height: int,
                          hor_texts: Sequence[Sequence[GridAnnotation]],
                          ver_texts: Sequence[Sequence[GridAnnotation]], margin: int = 0) -> Image.Image:
    """A1111's signature: ``im`` is a plain grid of ``width`` x ``height`` cells; returns it re-laid with margins
    and labels."""
    cells, cols, rows = split_cells(im, width, height)
    return annotate_cells(cells, cols, rows, hor_texts, ver_texts, margin)


def prompt_matrix_annotations(parts: Sequence[str]) -> tuple[list[list[GridAnnotation]], list[list[GridAnnotation]]]:
    """Column and row legends of a prompt matrix: the first half of the parts toggles along columns, the rest along
    rows; each label lists every part of its half, active or not."""
    boundary = math.ceil(len(parts) / 2)
    horizontal, vertical = parts[:boundary], parts[boundary:]
    hor = [[GridAnnotation(x, is_active=bool(pos & (1 << i))) for i, x in enumerate(horizontal)]
           for pos in range(1 << len(horizontal))]
    ver = [[GridAnnotation(x, is_active=bool(pos & (1 << i))) for i, x in enumerate(vertical)]
           for pos in range(1 << len(vertical))]
    return hor, ver


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: Sequence[str],
                       margin: int = 0) -> Image.Image:
    """A1111's signature: ``all_prompts`` is the split prompt (base first); labels show which parts are in."""
    hor, ver = prompt_matrix_annotations(list(all_prompts[1:]))
    return draw_grid_annotations(im, width, height, hor, ver, margin)


def titled_grids(grids: Sequence[Image.Image], titles: Sequence[str] | None, margin: int = 0) -> Image.Image:
    """Grids side by side, ``margin`` apart, each under its title when titles are given (the Z axis of a plot)."""
    if titles:
        grids = [annotate_cells([g], 1, 1, [[GridAnnotation(t)]], [[]]) for g, t in zip(grids, titles, strict=True)]
    width = sum(g.width for g in grids) + margin * (len(grids) - 1)
    height = max(g.height for g in grids)
    combined = Image.new("RGB", (width, height), BACKGROUND)
    x = 0
    for grid in grids:
        combined.paste(grid, (x, 0))
        x += grid.width + margin
    return combined
