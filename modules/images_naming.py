"""File names for saved images: A1111's filename patterns ("[seed]-[prompt_spaces]", "[datetime<%Y%m%d>]", ...),
sanitising and the `00000-` sequence numbers.

Kept apart from `modules.images` (which re-exports every name here, A1111's home for them) so each file stays small.
Extensions add patterns through `FilenameGenerator.replacements`.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import logging
import os
import re
import string
from collections.abc import Callable
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)


def _opts(opts: Any = None) -> Any:
    from modules.images import get_opts

    return get_opts(opts)


invalid_filename_chars = '#<>:"/\\|?*\n\r\t'
invalid_filename_prefix = " "
invalid_filename_postfix = " ."
re_nonletters = re.compile(r"[\s" + string.punctuation + "]+")
re_pattern = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
re_pattern_arg = re.compile(r"(.*)<([^>]*)>$")
max_filename_part_length = 128
NOTHING_AND_SKIP_PREVIOUS_TEXT = object()


def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    """Make text safe as part of a file name: no path separators or reserved characters, at most 128 characters.

    A1111's flags `--unix-filenames-sanitization` (replace only "/") and `--filenames-max-length` are honoured when
    the command line defines them.
    """
    if text is None:
        return None
    cmd_opts = getattr(importlib.import_module("modules.shared"), "cmd_opts", None)
    invalid = "/" if getattr(cmd_opts, "unix_filenames_sanitization", False) else invalid_filename_chars
    max_length = getattr(cmd_opts, "filenames_max_length", None) or max_filename_part_length
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(x): "_" for x in invalid})
    text = text.lstrip(invalid_filename_prefix)[:max_length]
    return text.rstrip(invalid_filename_postfix)


def _shared(name: str) -> Any:
    from modules import shared

    return getattr(shared, name, None)


def _string_hash(text: str | None, *args: str) -> str | None:
    if text is None:
        return None
    length = int(args[0]) if args and args[0] != "" else 8
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class FilenameGenerator:
    """Expands A1111 filename patterns such as "[seed]-[prompt_spaces]" or "[datetime<%Y%m%d><UTC>]".

    `replacements` maps a lower-case pattern name to `fn(self, *args)`; extensions may add entries. A function that
    returns None leaves the pattern as written; `NOTHING_AND_SKIP_PREVIOUS_TEXT` drops it with the text before it.
    """

    default_time_format = "%Y%m%d%H%M%S"

    replacements: dict[str, Callable[..., Any]] = {
        "seed": lambda self: self.seed if self.seed is not None else "",
        "seed_first": lambda self: self.seed if self.p.batch_size == 1 else self.p.all_seeds[0],
        "seed_last": lambda self: NOTHING_AND_SKIP_PREVIOUS_TEXT if self.p.batch_size == 1 else self.p.all_seeds[-1],
        "steps": lambda self: self.p and self.p.steps,
        "cfg": lambda self: self.p and self.p.cfg_scale,
        "width": lambda self: self.image.width if self.image is not None else self.p.width,
        "height": lambda self: self.image.height if self.image is not None else self.p.height,
        "styles": lambda self: self.p and sanitize_filename_part(
            ", ".join(s for s in self.p.styles if s != "None") or "None", replace_spaces=False),
        "sampler": lambda self: self.p and sanitize_filename_part(self.p.sampler_name, replace_spaces=False),
        "scheduler": lambda self: self.p and sanitize_filename_part(self.p.scheduler, replace_spaces=False),
        "model_hash": lambda self: self.model_hash(),
        "model_name": lambda self: sanitize_filename_part(self.model_name(), replace_spaces=False),
        "date": lambda self: datetime.datetime.now().strftime("%Y-%m-%d"),
        "datetime": lambda self, *args: self.datetime(*args),
        "job_timestamp": lambda self: self.job_timestamp(),
        "prompt_hash": lambda self, *args: _string_hash(self.prompt, *args),
        "negative_prompt_hash": lambda self, *args: _string_hash(self.p.negative_prompt, *args),
        "full_prompt_hash": lambda self, *args: _string_hash(f"{self.p.prompt} {self.p.negative_prompt}", *args),
        "prompt": lambda self: sanitize_filename_part(self.prompt),
        "prompt_no_styles": lambda self: self.prompt_no_style(),
        "prompt_spaces": lambda self: sanitize_filename_part(self.prompt, replace_spaces=False),
        "prompt_words": lambda self: self.prompt_words(),
        "batch_number": lambda self: NOTHING_AND_SKIP_PREVIOUS_TEXT if self.p.batch_size == 1 or self.zip
        else self.p.batch_index + 1,
        "batch_size": lambda self: self.p.batch_size,
        "generation_number": lambda self: NOTHING_AND_SKIP_PREVIOUS_TEXT
        if (self.p.n_iter == 1 and self.p.batch_size == 1) or self.zip
        else self.p.iteration * self.p.batch_size + self.p.batch_index + 1,
        "hasprompt": lambda self, *args: self.hasprompt(*args),
        "clip_skip": lambda self: getattr(_opts(self.opts), "CLIP_stop_at_last_layers", 1),
        "denoising": lambda self: self.p.denoising_strength if self.p and getattr(self.p, "denoising_strength", None)
        else NOTHING_AND_SKIP_PREVIOUS_TEXT,
        "user": lambda self: self.p.user,
        "none": lambda self: "",
        "image_hash": lambda self, *args: hashlib.sha256(self.image.tobytes()).hexdigest()[
            :int(args[0]) if args and args[0] != "" else None],
    }

    def __init__(self, p: Any, seed: int | None, prompt: str | None, image: Image.Image | None, zip: bool = False,
                 basename: str = "", *, opts: Any = None) -> None:
        self.p = p
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.zip = zip
        self.basename = basename
        self.opts = opts

    def model_hash(self) -> str | None:
        if hasattr(self.p, "sd_model_hash"):
            return self.p.sd_model_hash
        return getattr(_shared("sd_model"), "sd_model_hash", None)

    def model_name(self) -> str | None:
        name = getattr(self.p, "sd_model_name", None)
        if name:
            return name
        info = getattr(_shared("sd_model"), "sd_checkpoint_info", None)
        return getattr(info, "model_name", None)

    def job_timestamp(self) -> str:
        stamp = getattr(self.p, "job_timestamp", None) or getattr(_shared("state"), "job_timestamp", None)
        return stamp or datetime.datetime.now().strftime(self.default_time_format)

    def prompt_no_style(self) -> str | None:
        """The prompt with the text of the applied styles removed (A1111's best-effort string surgery)."""
        if self.p is None or self.prompt is None:
            return None
        prompt_no_style = self.prompt
        styles = _shared("prompt_styles")
        style_prompts = styles.get_style_prompts(self.p.styles) if styles is not None else []
        for style in style_prompts:
            if style:
                for part in style.split("{prompt}"):
                    prompt_no_style = prompt_no_style.replace(part, "").replace(", ,", ",").strip().strip(",")
                prompt_no_style = prompt_no_style.replace(style, "").strip().strip(",").strip()
        return sanitize_filename_part(prompt_no_style, replace_spaces=False)

    def prompt_words(self) -> str | None:
        words = [x for x in re_nonletters.split(self.prompt or "") if x] or ["empty"]
        max_words = getattr(_opts(self.opts), "directories_max_prompt_words", 8)
        return sanitize_filename_part(" ".join(words[:max_words]), replace_spaces=False)

    def datetime(self, *args: str) -> str | None:
        """[datetime], [datetime<format>], [datetime<format><time zone>]; bad format or zone -> defaults."""
        from zoneinfo import ZoneInfo

        time_format = args[0] if args and args[0] != "" else self.default_time_format
        try:
            zone = ZoneInfo(args[1]) if len(args) > 1 else None
        except Exception:
            zone = None
        now = datetime.datetime.now().astimezone(zone)
        try:
            formatted = now.strftime(time_format)
        except (ValueError, TypeError):
            formatted = now.strftime(self.default_time_format)
        return sanitize_filename_part(formatted, replace_spaces=False)

    def hasprompt(self, *args: str) -> str | None:
        """[hasprompt<word|default><word2>]: each word if the prompt contains it, else its default."""
        if self.p is None or self.prompt is None:
            return None
        lower = self.prompt.lower()
        out = ""
        for arg in args:
            if arg != "":
                expected, _, default = arg.partition("|")
                if expected.lower() in lower:
                    out += expected.lower()
                else:
                    out += default
        return sanitize_filename_part(out)

    def apply(self, x: str) -> str:
        """Expand every [pattern] in x; unknown patterns stay as written."""
        res = ""
        for m in re_pattern.finditer(x):
            text, pattern = m.groups()
            if pattern is None:
                res += text
                continue
            pattern_args: list[str] = []
            while (arg_match := re_pattern_arg.match(pattern)) is not None:
                pattern, arg = arg_match.groups()
                pattern_args.insert(0, arg)

            fun = self.replacements.get(pattern.lower())
            if fun is not None:
                try:
                    replacement = fun(self, *pattern_args)
                except Exception:
                    log.exception("could not put [%s] into a file name", pattern)
                    replacement = None
                if replacement is NOTHING_AND_SKIP_PREVIOUS_TEXT:
                    continue
                if replacement is not None:
                    res += text + str(replacement)
                    continue
            res += f"{text}[{pattern}]"
        return res


def get_next_sequence_number(path: str, basename: str) -> int:
    """1 + the largest number that starts a file name in `path` (after "<basename>-" when given); 0 if none."""
    result = -1
    if basename != "":
        basename = basename + "-"
    for name in os.listdir(path):
        if name.startswith(basename):
            first = os.path.splitext(name[len(basename):])[0].split("-")[0]
            if first.isdigit():
                result = max(int(first), result)
    return result + 1


def strip_path_escapes(text: str) -> str:
    """Patterns come from settings that requests can override: no leading separators and no ".." segments."""
    return re.sub(r"^[\\/]+|\.{2,}[\\/]+|[\\/]+\.{2,}", "", text)


