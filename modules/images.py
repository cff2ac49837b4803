"""Image helpers with A1111's names and behaviour: grids, img2img resize modes, file naming and saving, infotext I/O.

Files land where A1111 would put them (`00000-<seed>.png` numbering, `[date]` sub-folders, its filename patterns)
and carry the infotext where A1111 reads it (PNG text chunk `parameters`, EXIF UserComment for JPEG/WebP/AVIF, GIF
comment), so images move freely between the two. Saving is atomic: a temp file in the target folder renamed into
place, so a watcher never sees half an image. Settings come from an `opts` argument, else `shared.opts`, else the
built-in defaults.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import math
import os
import tempfile
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import ExifTags, Image, PngImagePlugin

from modules.errors import InvalidRequest
from modules.grid_labels import GridAnnotation, draw_grid_annotations, draw_prompt_matrix  # noqa: F401  (A1111's names)
from modules.images_naming import (  # noqa: F401  (A1111's names, re-exported for extensions)
    NOTHING_AND_SKIP_PREVIOUS_TEXT,
    FilenameGenerator,
    get_next_sequence_number,
    invalid_filename_chars,
    invalid_filename_postfix,
    invalid_filename_prefix,
    max_filename_part_length,
    re_nonletters,
    re_pattern,
    re_pattern_arg,
    sanitize_filename_part,
    strip_path_escapes,
)

log = logging.getLogger(__name__)

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

UpscaleFn = Callable[[Image.Image, float], Image.Image]

_fallback_opts: Any = None


def get_opts(opts: Any = None) -> Any:
    """The settings to use: the argument, else `shared.opts` once the app has set it, else built-in defaults."""
    global _fallback_opts
    if opts is not None:
        return opts
    from modules import shared

    if shared.opts is not None:
        return shared.opts
    if _fallback_opts is None:
        from modules.options import Options
        from modules.shared_options import options_templates

        _fallback_opts = Options(options_templates)
    return _fallback_opts


def _opt(opts: Any, key: str, default: Any) -> Any:
    """A setting that may not be declared (A1111 has it, we may not yet): A1111's default then."""
    return getattr(opts, key, default)


# --- grids ---------------------------------------------------------------------------------------------------------

def image_grid(imgs: Sequence[Image.Image], batch_size: int = 1, rows: int | None = None, *,
               opts: Any = None) -> Image.Image:
    """Tile images row by row. Rows: `n_rows` if > 0, the batch size if 0, else about sqrt(n) (A1111's rule)."""
    if rows is None:
        opts = get_opts(opts)
        n_rows = _opt(opts, "n_rows", -1)
        if n_rows > 0:
            rows = n_rows
        elif n_rows == 0:
            rows = batch_size
        elif _opt(opts, "grid_prevent_empty_spots", False):
            rows = math.floor(math.sqrt(len(imgs)))
            while len(imgs) % rows != 0:
                rows -= 1
        else:
            rows = round(math.sqrt(len(imgs)))
    rows = max(1, min(rows, len(imgs)))
    cols = math.ceil(len(imgs) / rows)
    imgs, cols, rows = _grid_callback(list(imgs), cols, rows)

    w, h = imgs[0].size
    grid = Image.new("RGB", size=(cols * w, rows * h), color="black")
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid


def _grid_callback(imgs: list[Image.Image], cols: int, rows: int) -> tuple[list[Image.Image], int, int]:
    """Extensions' ``on_image_grid`` callbacks may change the pictures and the layout of a grid."""
    try:
        callbacks = importlib.import_module("modules.script_callbacks")
    except ImportError:
        return imgs, cols, rows
    params = callbacks.ImageGridLoopParams(imgs, cols, rows)
    callbacks.image_grid_callback(params)
    return list(params.imgs), int(params.cols), int(params.rows)


Grid = namedtuple("Grid", ["tiles", "tile_w", "tile_h", "image_w", "image_h", "overlap"])


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """Overlapping tiles covering the image (SD upscale works tile by tile); `combine_grid` blends them back."""
    w, h = image.width, image.height
    cols = math.ceil((w - overlap) / (tile_w - overlap))
    rows = math.ceil((h - overlap) / (tile_h - overlap))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0

    grid = Grid([], tile_w, tile_h, w, h, overlap)
    for row in range(rows):
        y = int(row * dy)
        if y + tile_h >= h:
            y = h - tile_h
        row_images = []
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= w:
                x = w - tile_w
            row_images.append([x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))])
        grid.tiles.append([y, tile_h, row_images])
    return grid


def combine_grid(grid: Grid) -> Image.Image:
    """Reassemble `split_grid` tiles, fading linearly across each overlap so no seams show."""
    def ramp(values: np.ndarray) -> Image.Image:
        return Image.fromarray((values * 255 / grid.overlap).astype(np.uint8), "L")

    ov = np.arange(grid.overlap, dtype=np.float32)
    mask_w = ramp(ov.reshape((1, grid.overlap)).repeat(grid.tile_h, axis=0))
    mask_h = ramp(ov.reshape((grid.overlap, 1)).repeat(grid.image_w, axis=1))

    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        combined_row = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0:
                combined_row.paste(tile, (0, 0))
                continue
            combined_row.paste(tile.crop((0, 0, grid.overlap, h)), (x, 0), mask=mask_w)
            combined_row.paste(tile.crop((grid.overlap, 0, w, h)), (x + grid.overlap, 0))
        if y == 0:
            combined.paste(combined_row, (0, 0))
            continue
        combined.paste(combined_row.crop((0, 0, combined_row.width, grid.overlap)), (0, y), mask=mask_h)
        combined.paste(combined_row.crop((0, grid.overlap, combined_row.width, h)), (0, y + grid.overlap))
    return combined


# --- img2img resize modes ------------------------------------------------------------------------------------------

def _find_upscale_fn(upscaler_name: str | None) -> UpscaleFn | None:
    """None for plain Lanczos; A1111's built-in "Nearest"; else the named entry of `shared.sd_upscalers`."""
    if upscaler_name in (None, "None", "Lanczos"):
        return None
    if upscaler_name == "Nearest":
        return lambda im, scale: im.resize((int(im.width * scale), int(im.height * scale)), resample=NEAREST)
    from modules import shared

    found = [u for u in getattr(shared, "sd_upscalers", None) or [] if getattr(u, "name", None) == upscaler_name]
    if found:
        upscaler = found[0]
        if hasattr(upscaler, "scaler"):  # A1111's UpscalerData(scaler=Upscaler, data_path=...)
            return lambda im, scale: upscaler.scaler.upscale(im, scale, upscaler.data_path)
        return upscaler.upscale  # modules.upscaling.UpscalerData
    raise InvalidRequest(f"Unknown upscaler {upscaler_name!r}.", "Choose one of the installed upscalers or 'None'.")


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int, upscaler_name: str | None = None,
                 upscale_fn: UpscaleFn | None = None) -> Image.Image:
    """Fit an image to width x height like A1111's img2img.

    0: just resize (stretch). 1: crop and resize (fill the frame, centre, cut the excess). 2 (and 3, whose latent
    upscale happens elsewhere): resize and fill (fit inside, centre, stretch the edge rows/columns into the bars).
    An upscale larger than 1x goes through `upscale_fn(image, scale)` (or the named upscaler), then Lanczos to the
    exact size; grayscale masks always use plain Lanczos.
    """
    if upscale_fn is None:
        upscale_fn = _find_upscale_fn(upscaler_name or _opt(get_opts(), "upscaler_for_img2img", None))

    def resize(img: Image.Image, w: int, h: int) -> Image.Image:
        if upscale_fn is None or img.mode == "L":
            return img.resize((w, h), resample=LANCZOS)
        scale = max(w / img.width, h / img.height)
        if scale > 1.0:
            img = upscale_fn(img, scale)
        if img.width != w or img.height != h:
            img = img.resize((w, h), resample=LANCZOS)
        return img

    if resize_mode == 0:
        return resize(im, width, height)

    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
    else:
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width

    resized = resize(im, src_w, src_h)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if resize_mode == 1:
        return res

    # Fill the bars by stretching the resized image's outermost row (or column), as A1111 does.
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                      box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill_width + src_w, 0))
    return res


# --- file names ----------------------------------------------------------------------------------------------------

# --- saving --------------------------------------------------------------------------------------------------------

@dataclass
class ImageSaveParams:
    """What a before/after-save callback sees and may change (A1111's `script_callbacks.ImageSaveParams`)."""

    image: Image.Image
    p: Any
    filename: str
    pnginfo: dict[str, Any] = field(default_factory=dict)


def _usercomment_exif(text: str) -> bytes:
    """EXIF bytes holding `text` as a Unicode UserComment, the form A1111 writes (and reads) for JPEG/WebP/AVIF."""
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = b"UNICODE\x00" + text.encode("utf-16-be")
    return exif.tobytes()


def _decode_usercomment(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", errors="replace")
        return body.decode("utf-16-be", errors="replace")
    if prefix == b"ASCII\x00\x00\x00":
        return body.decode("utf8", errors="replace")
    if prefix == b"JIS\x00\x00\x00\x00\x00":
        return body.decode("shift_jis", errors="replace")
    if prefix == b"\x00" * 8:
        return body.decode("utf8", errors="ignore").rstrip("\x00")
    return raw.decode("utf8", errors="ignore")


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, filename: str, extension: str | None = None,
                            existing_pnginfo: dict[str, Any] | None = None, pnginfo_section_name: str = "parameters",
                            *, opts: Any = None) -> None:
    """Write `image` to `filename` with the infotext where A1111 puts it for the format (not atomic by itself)."""
    opts = get_opts(opts)
    extension = (extension or os.path.splitext(filename)[1]).lower()
    image_format = Image.registered_extensions()[extension]
    quality = opts.jpeg_quality
    enable_pnginfo = opts.enable_pnginfo

    if extension == ".png":
        pnginfo_data = None
        if enable_pnginfo:
            chunks = dict(existing_pnginfo or {})
            chunks[pnginfo_section_name] = geninfo
            pnginfo_data = PngImagePlugin.PngInfo()
            for key, value in chunks.items():
                if value is not None:
                    pnginfo_data.add_text(key, str(value))  # Pillow picks iTXt when the text is not Latin-1
        image.save(filename, format=image_format, quality=quality, pnginfo=pnginfo_data)
    elif extension in (".jpg", ".jpeg", ".webp", ".avif"):
        if image.mode == "I;16":
            image = image.point(lambda v: v * 0.0038910505836576).convert("L" if extension in (".jpg", ".jpeg")
                                                                          else "RGB")
        elif image.mode not in ("RGB", "L") and (extension in (".jpg", ".jpeg") or image.mode != "RGBA"):
            image = image.convert("RGB")
        kwargs: dict[str, Any] = {"quality": quality}
        if extension == ".webp":
            kwargs["lossless"] = _opt(opts, "webp_lossless", False)
        if enable_pnginfo and geninfo is not None:
            kwargs["exif"] = _usercomment_exif(geninfo)
        image.save(filename, format=image_format, **kwargs)
    elif extension == ".gif":
        kwargs = {"comment": geninfo} if geninfo is not None else {}
        image.save(filename, format=image_format, **kwargs)
    else:
        image.save(filename, format=image_format, quality=quality)


TEMP_PREFIX = ".atelier-"  # temp files are hidden and never look numbered, so numbering ignores them


def _atomic_save(image: Image.Image, target: str, geninfo: str | None, pnginfo: dict[str, Any],
                 section: str, opts: Any) -> None:
    """Write to a temp file beside `target`, then rename over it: readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=os.path.dirname(target) or ".")
    os.close(fd)
    try:
        save_image_with_geninfo(image, geninfo, tmp, os.path.splitext(target)[1], existing_pnginfo=pnginfo,
                                pnginfo_section_name=section, opts=opts)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write_text(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf8") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _script_callback(name: str) -> Callable[[ImageSaveParams], None] | None:
    """The extension system's save hook of that name, when it is installed (callers may pass their own instead)."""
    try:
        module = importlib.import_module("modules.script_callbacks")
    except ImportError:
        return None
    return getattr(module, name, None)


def _file_decoration(namegen: FilenameGenerator, opts: Any, p: Any, seed: int | None, short_filename: bool,
                     suffix: str) -> str:
    if short_filename or seed is None:
        pattern: str | None = ""
    else:
        pattern = (getattr(p, "override_settings", None) or {}).get("samples_filename_pattern")
    if pattern is None:
        pattern = opts.samples_filename_pattern or ("[seed]" if opts.save_to_dirs else "[seed]-[prompt_spaces]")
    return strip_path_escapes(namegen.apply(pattern)) + suffix


def save_image(image: Image.Image, path: str, basename: str, seed: int | None = None, prompt: str | None = None,
               extension: str = "png", info: str | None = None, short_filename: bool = False, no_prompt: bool = False,
               grid: bool = False, pnginfo_section_name: str = "parameters", p: Any = None,
               existing_info: dict[str, Any] | None = None, forced_filename: str | None = None, suffix: str = "",
               save_to_dirs: bool | None = None, *, opts: Any = None,
               before_save: Callable[[ImageSaveParams], None] | None = None,
               after_save: Callable[[ImageSaveParams], None] | None = None) -> tuple[str, str | None]:
    """Save an image as A1111 does and return (image path, .txt path or None).

    Name: `<basename->NNNNN-<pattern><suffix>.<ext>` in `path` (or its `directories_filename_pattern` sub-folder),
    NNNNN = 1 + the highest number already there; `forced_filename` bypasses patterns and numbering.
    `before_save` may change the image, file name and text chunks; `after_save` sees the final ones. Without them
    the `script_callbacks` hooks run when the extension system provides them.
    """
    opts = get_opts(opts)
    namegen = FilenameGenerator(p, seed, prompt, image, opts=opts)

    if save_to_dirs is None:
        save_to_dirs = (grid and _opt(opts, "grid_save_to_dirs", True)) or (
            not grid and opts.save_to_dirs and not no_prompt)
    if save_to_dirs:
        dirname = namegen.apply(opts.directories_filename_pattern or "[prompt_words]").lstrip(" ").rstrip("\\ /")
        path = os.path.join(path, strip_path_escapes(dirname))
    os.makedirs(path, exist_ok=True)

    if forced_filename is not None:
        fullfn = os.path.join(path, f"{forced_filename}.{extension}")
    else:
        decoration = _file_decoration(namegen, opts, p, seed, short_filename, suffix)
        add_number = opts.save_images_add_number or decoration == ""
        if decoration != "" and add_number:
            decoration = f"-{decoration}"
        if add_number:
            basecount = get_next_sequence_number(path, basename)
            fullfn = ""
            for i in range(500):
                number = f"{basecount + i:05}" if basename == "" else f"{basename}-{basecount + i:04}"
                fullfn = os.path.join(path, f"{number}{decoration}.{extension}")
                if not os.path.exists(fullfn):
                    break
        else:
            fullfn = os.path.join(path, f"{decoration}.{extension}")

    pnginfo = dict(existing_info or {})
    if info is not None:
        pnginfo[pnginfo_section_name] = info

    params = ImageSaveParams(image, p, fullfn, pnginfo)
    before = before_save or _script_callback("before_image_saved_callback")
    if before is not None:
        before(params)
    image = params.image
    info = params.pnginfo.get(pnginfo_section_name, None)

    without_extension, ext = os.path.splitext(params.filename)
    folder, stem = os.path.split(without_extension)
    os.makedirs(folder or ".", exist_ok=True)  # a callback may have moved the file to a new folder
    if hasattr(os, "statvfs"):  # keep within the file system's name limit
        max_name_len = os.statvfs(folder or ".").f_namemax
        without_extension = os.path.join(folder, stem[:max_name_len - max(4, len(ext))])
    if _opt(opts, "save_images_replace_action", "Replace") != "Replace":
        base, n = without_extension, 0
        while os.path.exists(without_extension + ext):
            n += 1
            without_extension = f"{base}-{n}"
    params.filename = fullfn = without_extension + ext

    _atomic_save(image, fullfn, info, params.pnginfo, pnginfo_section_name, opts)
    image.already_saved_as = fullfn
    _export_downscaled_jpg(image, without_extension, ext, info, params.pnginfo, pnginfo_section_name, opts)

    txt_fullfn = None
    if opts.save_txt and info is not None:
        txt_fullfn = f"{without_extension}.txt"
        _atomic_write_text(txt_fullfn, f"{info}\n")

    after = after_save or _script_callback("image_saved_callback")
    if after is not None:
        after(params)
    return fullfn, txt_fullfn


def _export_downscaled_jpg(image: Image.Image, without_extension: str, ext: str, info: str | None,
                           pnginfo: dict[str, Any], section: str, opts: Any) -> None:
    """A1111's `export_for_4chan`: also save a JPEG copy of images over 4000 px a side or over 4 MB."""
    if not _opt(opts, "export_for_4chan", True) or ext.lower() in (".jpg", ".jpeg"):
        return
    side = _opt(opts, "target_side_length", 4000)
    oversize = image.width > side or image.height > side
    too_big = os.stat(without_extension + ext).st_size > _opt(opts, "img_downscale_threshold", 4.0) * 1024 * 1024
    if not (oversize or too_big):
        return
    if oversize:
        ratio = image.width / image.height
        size = (side, round(image.height * side / image.width)) if ratio > 1 else (
            round(image.width * side / image.height), side)
        try:
            image = image.resize(size, LANCZOS)
        except Exception:  # e.g. 16-bit modes Lanczos cannot handle
            image = image.resize(size)
    try:
        _atomic_save(image, without_extension + ".jpg", info, pnginfo, section, opts)
    except Exception:
        log.exception("could not save the downscaled JPEG copy")


# --- reading -------------------------------------------------------------------------------------------------------

IGNORED_INFO_KEYS = {
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background", "timestamp",
    "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop",
}


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, Any]]:
    """(infotext or None, other metadata): PNG `parameters` chunk, else EXIF UserComment, else GIF comment."""
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)

    if "exif" in items:
        comment: bytes | str = b""
        try:
            exif = Image.Exif()
            exif.load(items["exif"])
            comment = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment, b"")
        except Exception:
            log.debug("unreadable EXIF block", exc_info=True)
        text = _decode_usercomment(comment)
        if text:
            geninfo = text
    elif "comment" in items:  # GIF
        comment = items["comment"]
        geninfo = comment.decode("utf8", errors="ignore") if isinstance(comment, bytes) else comment

    for key in IGNORED_INFO_KEYS:
        items.pop(key, None)

    if items.get("Software") == "NovelAI":
        try:
            geninfo = _novelai_infotext(items, image)
        except Exception:
            log.exception("could not read NovelAI generation parameters")
    return geninfo, items


def _novelai_infotext(items: dict[str, Any], image: Image.Image) -> str:
    """NovelAI keeps its parameters as JSON in `Comment`; A1111 turns them into an infotext like this."""
    json_info = json.loads(items["Comment"])
    try:
        from modules import sd_samplers

        sampler = sd_samplers.samplers_map.get(json_info["sampler"], "Euler a")
    except Exception:
        sampler = "Euler a"
    return (f"{items['Description']}\nNegative prompt: {json_info['uc']}\n"
            f"Steps: {json_info['steps']}, Sampler: {sampler}, CFG scale: {json_info['scale']}, "
            f"Seed: {json_info['seed']}, Size: {image.width}x{image.height}, Clip skip: 2, ENSD: 31337")


def decode_image(data: bytes) -> Image.Image:
    """Open uploaded bytes as an image, or raise `InvalidRequest` saying the upload is not a readable image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:
        raise InvalidRequest(
            f"The uploaded data is not an image that can be read ({type(e).__name__}: {e}).",
            "Send a PNG, JPEG or WebP file (base64-encoded in API requests).",
        ) from e
    return image


def image_data(data: bytes) -> tuple[str | None, None]:
    """A1111's drop handler: the infotext from an image file, else the bytes as text (< 10000 chars), else ""."""
    try:
        textinfo, _ = read_info_from_image(Image.open(io.BytesIO(data)))
        return textinfo, None
    except Exception:
        pass
    try:
        text = data.decode("utf8")
        if len(text) < 10000:
            return text, None
    except Exception:
        pass
    return "", None


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    """Replace transparency with `bgcolor` (e.g. "#ffffff") and return an RGB image."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")
