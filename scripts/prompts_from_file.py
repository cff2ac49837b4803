"""Built-in selectable script "Prompts from file or textbox": one job per non-empty line of the textbox (or of an
uploaded text file), each from a copy of the current settings.

A line is either a plain prompt or, when it starts with ``--``, command-line style options that override the job's
fields for that line only, e.g. ``--prompt "a red cube" --negative_prompt blurry --steps 10 --seed 5``. The options
are A1111's (see ``PROMPT_OPTIONS``); ``--prompt`` and ``--negative_prompt`` take every word up to the next option.
Every line is read and checked before the first picture: an unknown option or a bad value is an error naming the
line.

Arguments (A1111's order): Iterate seed every line, Use same random seed for all lines, Insert prompts at the
("start" or "end" of the job's own prompt), List of prompt inputs.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import gradio as gr

from modules import scripts
from modules.checkpoint_switch import apply_checkpoint, resolve_title
from modules.errors import InvalidRequest
from modules.processing import Processed, fix_seed, process_images
from modules.samplers import registry
from modules.samplers.schedulers import find_scheduler

POSITIONS = ("start", "end")
TRUE_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(text: str) -> bool:
    value = TRUE_WORDS.get(text.strip().lower())
    if value is None:
        raise ValueError("expected true or false")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _size(text: str) -> int:
    value = _positive_int(text)
    if value % 8:
        raise ValueError("must be a multiple of 8")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _sampler(text: str) -> str:
    name, scheduler = registry.split_sampler_scheduler(text)
    return text.strip() if scheduler is not None else name


def _sampler_index(text: str) -> str:
    names = registry.sampler_names()
    index = int(text)
    if not 0 <= index < len(names):
        raise ValueError(f"there are {len(names)} samplers")
    return names[index]


def _scheduler(text: str) -> str:
    return find_scheduler(text).label


def _relative_folder(text: str) -> str:
    """Output folders stay inside the data folder: a line must not write pictures anywhere on the disk."""
    path = PurePath(text)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError("must be a folder inside the data folder (relative, without ..)")
    return text


def _styles(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


PROMPT_OPTIONS: dict[str, Callable[[str], Any]] = {
    "sd_model": resolve_title,
    "outpath_samples": _relative_folder,
    "outpath_grids": _relative_folder,
    "prompt_for_display": str,
    "prompt": str,
    "negative_prompt": str,
    "styles": _styles,
    "seed": int,
    "subseed_strength": _fraction,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_index": _sampler_index,
    "sampler_name": _sampler,
    "scheduler": _scheduler,
    "batch_size": _positive_int,
    "n_iter": _positive_int,
    "steps": _positive_int,
    "cfg_scale": float,
    "width": _size,
    "height": _size,
    "restore_faces": _bool,
    "tiling": _bool,
    "do_not_save_samples": _bool,
    "do_not_save_grid": _bool,
    "denoising_strength": _fraction,
}
"""Option -> converter of its text; a converter raises ValueError for a bad value."""
MULTI_WORD = ("prompt", "negative_prompt", "styles")
"""Options that take every word up to the next ``--option``."""


def parse_line(line: str, number: int) -> dict[str, Any]:
    """The fields one line sets: ``{"prompt": line}`` for a plain prompt, else its options, converted."""
    if not line.startswith("--"):
        return {"prompt": line}
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise InvalidRequest(f"Line {number}: {e} in {line!r}.", "Close every quote you open.") from None
    found: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--"):
            raise InvalidRequest(f"Line {number}: expected an option like --steps, got {word!r}.",
                                 'Quote values with spaces: --prompt "a red cube".')
        tag = word[2:]
        if tag not in PROMPT_OPTIONS:
            raise InvalidRequest(f"Line {number}: unknown option {word}.",
                                 f"Known options: {', '.join('--' + k for k in PROMPT_OPTIONS)}.")
        values = []
        pos += 1
        while pos < len(words) and not words[pos].startswith("--"):
            values.append(words[pos])
            pos += 1
            if tag not in MULTI_WORD:
                break
        if not values:
            raise InvalidRequest(f"Line {number}: option {word} has no value.", f"Write {word} <value>.")
        text = ", ".join(values) if tag == "styles" else " ".join(values)
        try:
            found[tag] = PROMPT_OPTIONS[tag](text)
        except InvalidRequest as e:
            raise InvalidRequest(f"Line {number}: {e.message}", e.hint) from None
        except (ValueError, TypeError, LookupError) as e:
            raise InvalidRequest(f"Line {number}: bad value {text!r} for {word}: {e}.",
                                 "Fix the value or remove the option.") from None
    return found


def parse_prompt_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of ``text`` parsed (see :func:`parse_line`); raises on the first bad line."""
    jobs = []
    for number, raw in enumerate(str(text or "").splitlines(), start=1):
        line = raw.strip()
        if line:
            jobs.append(parse_line(line, number))
    return jobs


def combine(own: str, from_line: str | None, position: str) -> str:
    """The line's prompt put before or after the job's own prompt (just the line's when the job has none)."""
    if not from_line:
        return own
    if not own:
        return from_line
    return f"{from_line} {own}" if position == "start" else f"{own} {from_line}"


def line_job(p: Any, fields: dict[str, Any], position: str) -> Any:
    """A copy of ``p`` with one line's fields set."""
    copy_p = copy.copy(p)
    copy_p.styles = list(p.styles or [])
    copy_p.extra_generation_params = dict(p.extra_generation_params or {})
    copy_p.override_settings = dict(p.override_settings or {})
    copy_p.comments = dict(p.comments or {})
    for key, value in fields.items():
        if key == "sd_model":
            apply_checkpoint(copy_p, value)
        elif key not in ("prompt", "negative_prompt"):
            setattr(copy_p, key, value)
    copy_p.prompt = combine(p.prompt if isinstance(p.prompt, str) else "", fields.get("prompt"), position)
    copy_p.negative_prompt = combine(p.negative_prompt if isinstance(p.negative_prompt, str) else "",
                                     fields.get("negative_prompt"), position)
    return copy_p


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompts from file or textbox"

    def ui(self, is_img2img: bool) -> list:
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False,
                                       elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(list(POSITIONS), label="Insert prompts at the", value="start",
                                   elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=2, elem_id=self.elem_id("prompt_txt"))
        upload = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))

        def read_upload(data: bytes | None, current: str) -> str:
            if data is None:
                return current
            return data.decode("utf8", errors="replace") if isinstance(data, bytes) else str(data)

        upload.change(read_upload, inputs=[upload, prompt_txt], outputs=[prompt_txt], show_progress=False)
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p: Any, checkbox_iterate: bool = False, checkbox_iterate_batch: bool = False,
            prompt_position: str = "start", prompt_txt: str = "") -> Any:
        if prompt_position not in POSITIONS:
            raise InvalidRequest(f"Prompts from file: position {prompt_position!r} is not start or end.",
                                 'Use "start" or "end".')
        jobs = parse_prompt_lines(prompt_txt)
        if not jobs:
            raise InvalidRequest("Prompts from file: the list of prompt inputs is empty.",
                                 "Write one prompt (or one line of --options) per line.")
        if checkbox_iterate or checkbox_iterate_batch:
            fix_seed(p)
        p.do_not_save_grid = True
        if p.state is not None:
            p.state.job_count = sum(int(job.get("n_iter", p.n_iter)) for job in jobs)

        images, all_prompts, all_negatives, all_seeds, infotexts = [], [], [], [], []
        first: Any = None
        for number, fields in enumerate(jobs, start=1):
            if p.state is not None:
                if p.state.interrupted or p.state.stopping_generation:
                    break
                p.state.job = f"Prompts from file: line {number} of {len(jobs)}"
            copy_p = line_job(p, fields, prompt_position)
            processed = process_images(copy_p)
            first = first or (copy_p, processed)
            images += processed.images
            all_prompts += processed.all_prompts
            all_negatives += processed.all_negative_prompts
            all_seeds += processed.all_seeds
            infotexts += processed.infotexts
            if checkbox_iterate:
                p.seed = p.seed + copy_p.batch_size * copy_p.n_iter
        if first is None:
            return Processed(p, [], seed=p.seed if isinstance(p.seed, int) else -1)
        first_p, first_processed = first
        return Processed(first_p, images, seed=first_processed.seed, info=infotexts[0] if infotexts else "",
                         subseed=first_processed.subseed, all_prompts=all_prompts, all_negative_prompts=all_negatives,
                         all_seeds=all_seeds, infotexts=infotexts)
