"""A1111's prompt language: prompt editing/alternation schedules, attention weights and AND (composable diffusion).

Extensions import these functions by their A1111 names, so names, signatures and results (including A1111's quirks)
match `modules/prompt_parser.py` of AUTOMATIC1111 (1.6 and later). The module is pure Python: the caller's model
does the text encoding, and torch is imported only inside the batch-reconstruction helpers that need it.

Scheduling syntax (A1111 parses it with a Lark Earley grammar; this is a hand-written single-pass parser that
accepts the same language, in linear time where Earley needs minutes for some 2,000-character prompts):
  `[from:to:when]` swap, `[to:when]` add after, `[from::when]` remove after, `[a|b|c]` alternate every step.
  Bracket groups that are not well formed stay literal text; a `|` outside any alternation, or a backslash that
  escapes nothing (end of text or a newline), makes the whole prompt literal (A1111's grammar error fallback).
  Every well-formed group is used. A1111's grammar is ambiguous when a well-formed group sits beside stray
  brackets (e.g. `[b:2]]]`: a schedule, or five literal characters?) and its pinned Lark 1.1.2 then picks by hash
  order, so its result changes from one process to the next; here the group always wins.
"""

from __future__ import annotations

import math
import re
from collections import namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------------------------------------------------------------
# Prompt editing and alternation
# ---------------------------------------------------------------------------------------------------------------------

_PLAIN_RUN = re.compile(r"[^\\\[\]():|]+")
# Lark's common.SIGNED_NUMBER (ASCII digits, optional exponent) with optional whitespace around it.
_WHEN = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*")


class _GrammarError(Exception):
    """The prompt is not in the schedule grammar at all: A1111 then uses the whole prompt verbatim."""


# A parsed prompt is a list of nodes: str (literal text), list (a nested run of nodes), _Scheduled or _Alternate.
# Branches of the special nodes are a str when they are only text, else a list.


@dataclass
class _Scheduled:
    """`[before:after:when]`; `before` is None for the `[after:when]` form."""

    before: str | list | None
    after: str | list
    when: str
    end_step: int = 0

    def pick(self, step: int) -> str | list:
        if step > self.end_step:
            return self.after
        return "" if self.before is None else self.before


@dataclass
class _Alternate:
    """`[a|b|c]`: option `(step - 1) % n` is used at each step."""

    options: list[str | list]

    def pick(self, step: int) -> str | list:
        return self.options[(step - 1) % len(self.options)]


def _compact(nodes: list) -> str | list:
    """Adjacent strings joined, and a run that is only text turned into one string, so rendering a step is cheap."""
    out: list = []
    for node in nodes:
        if isinstance(node, str) and out and isinstance(out[-1], str):
            out[-1] += node
        else:
            out.append(node)
    if not out:
        return ""
    return out[0] if len(out) == 1 and isinstance(out[0], str) else out


@dataclass
class _Group:
    """A bracket opened but not closed yet; its content is split by the `:`/`|` separators seen at its own level."""

    opener: str
    segments: list[list]
    separators: list[str]

    def literal(self) -> list:
        """The group's text as it stands, used when it turns out not to be well formed."""
        nodes: list = [self.opener]
        for index, segment in enumerate(self.segments):
            if index:
                nodes.append(self.separators[index - 1])
            nodes.extend(segment)
        return nodes


def _close_group(group: _Group, closer: str) -> str | list | _Scheduled | _Alternate | None:
    """The node a well-formed group becomes, or None when the closer or the separators do not fit its form.

    Emphasis groups stay literal text; a nested list keeps deep nesting from copying its content at every level.
    """
    separators = set(group.separators)
    if group.opener == "(":
        if closer != ")" or "|" in separators or len(group.separators) > 1:
            return None
        return _compact([*group.literal(), ")"])
    if closer != "]":
        return None
    if not separators:
        return _compact([*group.literal(), "]"])
    if separators == {"|"}:
        return _Alternate([_compact(segment) for segment in group.segments])
    if separators == {":"} and len(group.separators) <= 2:
        return _close_scheduled([_compact(segment) for segment in group.segments])
    return None


def _close_scheduled(segments: list[str | list]) -> _Scheduled | None:
    """`[to:when]` or `[from:to:when]`; `when` must be a bare number, optionally padded with whitespace."""
    when = segments[-1]
    match = _WHEN.fullmatch(when) if isinstance(when, str) else None
    if match is None:
        return None
    before = segments[0] if len(segments) == 3 else None
    return _Scheduled(before, segments[-2], match.group(1))


class _ScheduleParser:
    """One left-to-right pass with a stack of open groups.

    A group that fails (wrong closer, bad separators, end of text) makes every enclosing group fail too, because a
    group's content may not contain stray brackets; they all become literal top-level text, and every well-formed
    group found inside or after them is still used.
    """

    def __init__(self, text: str):
        self.text = text
        self.top: list = []
        self.open_groups: list[_Group] = []

    def parse(self) -> list:
        text, position = self.text, 0
        while position < len(text):
            char = text[position]
            if char == "\\":
                if position + 1 >= len(text) or text[position + 1] == "\n":
                    raise _GrammarError("backslash escapes nothing")
                self._add(text[position : position + 2])
                position += 2
                continue
            if char in "[(":
                self.open_groups.append(_Group(char, [[]], []))
            elif char in ":|":
                self._separator(char)
            elif char in "])":
                self._closer(char)
            else:
                run = _PLAIN_RUN.match(text, position)
                self._add(run.group(0))
                position = run.end()
                continue
            position += 1
        self._abandon_open_groups()
        return self.top

    def _add(self, node: str | list | _Scheduled | _Alternate) -> None:
        target = self.open_groups[-1].segments[-1] if self.open_groups else self.top
        if isinstance(node, str) and target and isinstance(target[-1], str):
            target[-1] += node
        else:
            target.append(node)

    def _separator(self, char: str) -> None:
        if not self.open_groups:
            if char == "|":
                raise _GrammarError("'|' outside an alternation")
            self._add(char)
            return
        group = self.open_groups[-1]
        group.separators.append(char)
        group.segments.append([])

    def _closer(self, char: str) -> None:
        if not self.open_groups:
            self._add(char)
            return
        node = _close_group(self.open_groups[-1], char)
        if node is None:
            self._abandon_open_groups()
            self._add(char)
            return
        self.open_groups.pop()
        self._add(node)

    def _abandon_open_groups(self) -> None:
        """Turn every still-open group into literal text at the top level (outermost first = text order)."""
        groups, self.open_groups = self.open_groups, []
        for group in groups:
            if "|" in group.separators:
                raise _GrammarError("'|' outside an alternation")
            for node in group.literal():
                self._add(node)


def _iter_special_nodes(nodes: list) -> Iterable[_Scheduled | _Alternate]:
    """Every schedule/alternation node, in all branches (iterative: nesting may be hundreds deep)."""
    pending = [nodes]
    while pending:
        for node in pending.pop():
            if isinstance(node, list):
                pending.append(node)
            elif isinstance(node, _Scheduled):
                yield node
                pending.extend(branch for branch in (node.before, node.after) if isinstance(branch, list))
            elif isinstance(node, _Alternate):
                yield node
                pending.extend(option for option in node.options if isinstance(option, list))


def _render(nodes: list, step: int) -> str:
    """The prompt text in effect at `step` (iterative depth-first walk, choosing one branch per special node)."""
    out: list[str] = []
    stack = [iter(nodes)]
    while stack:
        for node in stack[-1]:
            if isinstance(node, str):
                out.append(node)
                continue
            if not isinstance(node, list):
                node = node.pick(step)
                if isinstance(node, str):
                    out.append(node)
                    continue
            stack.append(iter(node))
            break
        else:
            stack.pop()
    return "".join(out)


@dataclass(frozen=True)
class _StepRule:
    """How a `when` number maps to a step; hires mode addresses the second pass (fractions 1..2, ints > base)."""

    steps: int
    int_offset: int = 0
    fraction_offset: float = 0.0
    old_style: bool = False

    def end_step(self, when: str) -> int:
        value = float(when)
        if self.old_style:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.fraction_offset) * self.steps
        else:
            value = value - self.int_offset
        value = min(self.steps, value)
        # A1111 raises OverflowError on ±inf ("1e999"); here +inf clamps to the last step and -inf never switches.
        return int(value) if math.isfinite(value) else -1


def _step_rule(base_steps: int, hires_steps: int | None, use_old_scheduling: bool) -> _StepRule:
    if hires_steps is None or use_old_scheduling:
        return _StepRule(base_steps, old_style=use_old_scheduling)
    return _StepRule(hires_steps, int_offset=base_steps, fraction_offset=1.0)


def _prompt_schedule(prompt: str, rule: _StepRule) -> list[list]:
    try:
        nodes = _ScheduleParser(prompt).parse()
    except _GrammarError:
        return [[rule.steps, prompt]]
    switch_steps = {rule.steps}
    for node in _iter_special_nodes(nodes):
        if isinstance(node, _Alternate):
            switch_steps.update(range(1, rule.steps + 1))
            continue
        node.end_step = rule.end_step(node.when)
        if node.end_step >= 1:
            switch_steps.add(node.end_step)
    return [[step, _render(nodes, step)] for step in sorted(switch_steps)]


def get_learned_conditioning_prompt_schedules(
    prompts: Sequence[str], base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[list]]:
    """Per prompt, a sorted list of `[end_at_step, text]`: `text` is used up to and including `end_at_step`.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:3]"], 10)
    [[[3, 'a b'], [10, 'a c']]]
    """
    rule = _step_rule(base_steps, hires_steps, use_old_scheduling)
    by_prompt = {prompt: _prompt_schedule(prompt, rule) for prompt in set(prompts)}
    return [by_prompt[prompt] for prompt in prompts]


# ---------------------------------------------------------------------------------------------------------------------
# Conditioning containers (hold whatever the model's encoder returns)
# ---------------------------------------------------------------------------------------------------------------------

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class SdConditioning(list):
    """A list of prompts that also carries what SDXL's conditioner needs (size, negative or not)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)


class ComposableScheduledPromptConditioning:
    """One AND-part of a prompt: its schedule and its composable-diffusion weight."""

    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    """Per batch item, its AND-parts; `shape` is read by DDIM/PLMS-style samplers."""

    def __init__(self, shape, batch):
        self.shape: tuple = shape
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def _cond_at(conds: Any, index: int) -> Any:
    """Encoders return a sequence of per-text conds or (SDXL) a dict of batched tensors."""
    if isinstance(conds, dict):
        return {key: value[index] for key, value in conds.items()}
    return conds[index]


def _encode_missing(model: Any, texts: list[str], prompts: Sequence[str], cache: dict[str, Any]) -> None:
    """Encode, in one model call, the texts of a schedule that no earlier prompt of this call produced."""
    missing = list(dict.fromkeys(text for text in texts if text not in cache))
    if not missing:
        return
    conds = model.get_learned_conditioning(SdConditioning(missing, copy_from=prompts))
    for index, text in enumerate(missing):
        cache[text] = _cond_at(conds, index)


def get_learned_conditioning(
    model: Any, prompts: Sequence[str], steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[ScheduledPromptConditioning]]:
    """Per prompt, its schedule with each text encoded by `model.get_learned_conditioning(texts)`.

    Identical texts are encoded once per call, so `[a|b]` over 30 steps costs two encodings, not thirty.
    """
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    cache: dict[str, Any] = {}
    result = []
    for schedule in schedules:
        texts = [text for _, text in schedule]
        _encode_missing(model, texts, prompts, cache)
        result.append([ScheduledPromptConditioning(end_at_step, cache[text]) for end_at_step, text in schedule])
    return result


# ---------------------------------------------------------------------------------------------------------------------
# AND (composable diffusion)
# ---------------------------------------------------------------------------------------------------------------------

re_AND = re.compile(r"\bAND\b")
# Shortest text, then an optional ":weight" suffix, then trailing whitespace (which is dropped from the text).
re_weight = re.compile(r"\A(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*\Z", re.S)


def _split_weight(subprompt: str) -> tuple[str, float]:
    text, weight = re_weight.match(subprompt).groups()
    if weight is None:
        return text, 1.0
    try:
        return text, float(weight)
    except ValueError:  # a \d that float() rejects: keep the suffix as text rather than fail
        return subprompt.rstrip(), 1.0


def get_multicond_prompt_list(prompts: Sequence[str]) -> tuple[list[list[tuple[int, float]]], list[str], dict]:
    """Split prompts on AND into sub-prompts with weights; identical sub-prompts share one flat-list slot.

    Returns (per prompt `[(flat index, weight), ...]`, the flat list of sub-prompts, `{sub-prompt: flat index}`).
    """
    res_indexes = []
    prompt_indexes: dict[str, int] = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()
    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            text, weight = _split_weight(subprompt)
            if text not in prompt_indexes:
                prompt_indexes[text] = len(prompt_flat_list)
                prompt_flat_list.append(text)
            indexes.append((prompt_indexes[text], weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


def get_multicond_learned_conditioning(
    model: Any, prompts: Sequence[str], steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> MulticondLearnedConditioning:
    """Like get_learned_conditioning, with each prompt split on AND into weighted, separately scheduled parts."""
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    batch = [
        [ComposableScheduledPromptConditioning(learned[index], weight) for index, weight in indexes]
        for indexes in res_indexes
    ]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


# ---------------------------------------------------------------------------------------------------------------------
# Batch reconstruction at a sampling step (torch imported lazily)
# ---------------------------------------------------------------------------------------------------------------------


def schedule_index_at(schedule: Sequence[ScheduledPromptConditioning], current_step: int) -> int:
    """Index of the first entry with `current_step <= end_at_step`; A1111 falls back to the first entry."""
    for index, entry in enumerate(schedule):
        if current_step <= entry.end_at_step:
            return index
    return 0


class DictWithShape(dict):
    """SDXL conds are dicts of tensors; samplers still ask for `.shape` (that of the cross-attention tensor)."""

    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step: int):
    """Stack, for every batch item, the cond its schedule selects at `current_step`."""
    import torch

    conds = [schedule[schedule_index_at(schedule, current_step)].cond for schedule in c]
    if isinstance(conds[0], dict):
        return DictWithShape({key: torch.stack([cond[key] for cond in conds]) for key in conds[0]})
    return torch.stack(conds)


def stack_conds(tensors: list):
    """Stack conds of different token lengths by repeating each shorter one's last vector."""
    import torch

    token_count = max(tensor.shape[0] for tensor in tensors)
    padded = [_repeat_last_vector(tensor, token_count) for tensor in tensors]
    return torch.stack(padded)


def _repeat_last_vector(tensor, token_count: int):
    import torch

    missing = token_count - tensor.shape[0]
    return torch.vstack([tensor, tensor[-1:].repeat([missing, 1])]) if missing else tensor


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step: int):
    """(per batch item `[(tensor index, weight), ...]`, all selected conds stacked) for composable diffusion."""
    tensors = []
    conds_list = []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for part in composable_prompts:
            conds_for_batch.append((len(tensors), part.weight))
            tensors.append(part.schedules[schedule_index_at(part.schedules, current_step)].cond)
        conds_list.append(conds_for_batch)
    if isinstance(tensors[0], dict):
        stacked = DictWithShape({key: stack_conds([cond[key] for cond in tensors]) for key in tensors[0]})
    else:
        param = c.batch[0][0].schedules[0].cond
        stacked = stack_conds(tensors).to(device=param.device, dtype=param.dtype)
    return conds_list, stacked


# ---------------------------------------------------------------------------------------------------------------------
# Attention / emphasis
# ---------------------------------------------------------------------------------------------------------------------

_ATTENTION_TOKEN = re.compile(
    r"""
    (?P<escaped>\\[()\[\]\\])          # \( \) \[ \] \\ : the character itself
  | (?P<backslash>\\)                  # any other backslash is dropped
  | (?P<open>[(\[])
  | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # (text:1.5)
  | (?P<close>[)\]])
  | [^\\()\[\]:]+
  | :
    """,
    re.X,
)
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)
_ROUND_MULTIPLIER = 1.1
_SQUARE_MULTIPLIER = 1 / 1.1


class _Weighted:
    """Fragments and weights in parallel lists, so multiplying a suffix is one fast list comprehension."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.weights: list[float] = []

    def add(self, text: str, weight: float = 1.0) -> None:
        self.texts.append(text)
        self.weights.append(weight)

    def add_plain(self, text: str) -> None:
        for index, part in enumerate(re_break.split(text)):
            if index:
                self.add("BREAK", -1)
            self.add(part)

    def multiply_from(self, start: int, multiplier: float) -> None:
        self.weights[start:] = [weight * multiplier for weight in self.weights[start:]]

    def merged(self) -> list[list]:
        """`[text, weight]` pairs with runs of identical weights joined."""
        if not self.texts:
            return [["", 1.0]]
        result = [[self.texts[0], self.weights[0]]]
        for text, weight in zip(self.texts[1:], self.weights[1:], strict=True):
            if result[-1][1] == weight:
                result[-1][0] += text
            else:
                result.append([text, weight])
        return result


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_prompt_attention(text: str) -> list[list]:
    """Split text into `[fragment, weight]`: `(x)` ×1.1, `[x]` ÷1.1, `(x:w)` ×w, nested brackets multiply.

    Unclosed brackets apply to the end of the text; `BREAK` becomes `["BREAK", -1]` (its weight is multiplied
    like any fragment's when it sits inside brackets, as in A1111).

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    out = _Weighted()
    round_open: list[int] = []
    square_open: list[int] = []
    for match in _ATTENTION_TOKEN.finditer(text):
        token, kind = match.group(0), match.lastgroup
        if kind == "escaped":
            out.add(token[1:])
        elif kind == "backslash":
            out.add("")
        elif kind == "open":
            (round_open if token == "(" else square_open).append(len(out.texts))
        elif kind == "weight" and round_open:
            _close_weighted(out, round_open, token, match.group("weight"))
        elif token == ")" and round_open:
            out.multiply_from(round_open.pop(), _ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            out.multiply_from(square_open.pop(), _SQUARE_MULTIPLIER)
        else:
            out.add_plain(token)
    _multiply_suffixes(out.weights, round_open, _ROUND_MULTIPLIER)
    _multiply_suffixes(out.weights, square_open, _SQUARE_MULTIPLIER)
    return out.merged()


def _multiply_suffixes(weights: list[float], starts: list[int], multiplier: float) -> None:
    """Same floats as `for start in starts: weights[start:] *= multiplier` in turn, without its O(n²) passes.

    Entry i is multiplied once per start <= i, one multiplication after the other. That count never decreases
    along the list, so the running product for each starting weight is kept and only extended.
    """
    extended: dict[tuple[float, float], tuple[int, float]] = {}
    count = 0
    for index, weight in enumerate(weights):
        while count < len(starts) and starts[count] <= index:
            count += 1
        if not count:
            continue
        key = (weight, math.copysign(1.0, weight))  # keeps 0.0 and -0.0 apart
        done, value = extended.get(key, (0, weight))
        for _ in range(count - done):
            value *= multiplier
        extended[key] = (count, value)
        weights[index] = value


def _close_weighted(out: _Weighted, round_open: list[int], token: str, weight_text: str) -> None:
    """`(x:1.5)`; a weight float() rejects (`(x:1..2)`, on which A1111 raises) is kept as text before a plain `)`."""
    weight = _as_float(weight_text)
    if weight is None:
        out.add_plain(token[:-1])
        weight = _ROUND_MULTIPLIER
    out.multiply_from(round_open.pop(), weight)


# ---------------------------------------------------------------------------------------------------------------------
# Comments
# ---------------------------------------------------------------------------------------------------------------------

_WHOLE_LINE_COMMENT = re.compile(r"(?:^|\n)#[^\n]*(?:\n|$)")
_END_OF_LINE_COMMENT = re.compile(r"#[^\n]*(?:\n|$)")


def strip_comments(text: str) -> str:
    """A1111's "Comments" script: `#` hides the rest of its line.

    A line starting with `#` collapses, with the newlines around it, into one newline; then any other `#...` up to
    and including its newline becomes a newline (so `a # note` ends up as `a \\n`, exactly as A1111 does).
    """
    text = _WHOLE_LINE_COMMENT.sub("\n", text)
    return _END_OF_LINE_COMMENT.sub("\n", text)
