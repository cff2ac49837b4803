"""Prompts of a processing job: styles, comments, extra networks (LoRA) and the text conditioning they become.

A1111 keeps these steps as methods of ``StableDiffusionProcessing`` (``setup_prompts``, ``parse_extra_network_prompts``,
``setup_conds``); the methods stay there for extensions that override them and call these functions.

The text side of a model is a :class:`~modules.conditioning.TextConditioner` kept in ``sd_model.extras`` so its
per-text cache survives across jobs (A1111's ``persistent_cond_cache``); its cache salt follows the merged LoRA set,
because LoRA changes the text encoder's weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from modules import extra_networks, prompt_parser
from modules.conditioning import ConditioningOptions, TextConditioner, emphasis_infotext
from modules.samplers import registry

log = logging.getLogger(__name__)

CONDITIONER_KEY = "text_conditioner"
EMBEDDING_DB_KEY = "embedding_db"


# --- prompts ---------------------------------------------------------------------------------------------------------

def expand_prompts(prompt: str | list[str], negative_prompt: str | list[str], count: int) -> tuple[list, list]:
    """One prompt and one negative prompt per image (A1111's rules for str vs list inputs)."""
    if isinstance(prompt, list):
        prompts = list(prompt)
    elif isinstance(negative_prompt, list):
        prompts = [prompt] * len(negative_prompt)
    else:
        prompts = [prompt] * count
    negatives = list(negative_prompt) if isinstance(negative_prompt, list) else [negative_prompt] * len(prompts)
    if len(prompts) != len(negatives):
        raise RuntimeError(f"Received a different number of prompts ({len(prompts)}) and negative prompts "
                           f"({len(negatives)})")
    return prompts, negatives


def apply_styles(p: Any, prompts: list[str], negative: bool) -> list[str]:
    """Apply ``p.styles`` from the style database (``p.prompt_styles``); without a database, prompts are unchanged."""
    database = getattr(p, "prompt_styles", None)
    if database is None or not p.styles:
        return prompts
    apply = database.apply_negative_styles_to_prompt if negative else database.apply_styles_to_prompt
    return [apply(text, p.styles) for text in prompts]


def strip_prompt_comments(p: Any, prompts: list[str]) -> list[str]:
    """A1111's built-in "Comments" script: ``#`` hides the rest of a line (setting ``enable_prompt_comments``)."""
    if not getattr(p.opts, "enable_prompt_comments", True):
        return prompts
    return [prompt_parser.strip_comments(text) for text in prompts]


def setup_prompts(p: Any) -> None:
    """``p.all_prompts`` / ``p.all_negative_prompts``: expanded, styled, comments removed."""
    prompts, negatives = expand_prompts(p.prompt, p.negative_prompt, p.batch_size * p.n_iter)
    p.all_prompts = strip_prompt_comments(p, apply_styles(p, prompts, negative=False))
    p.all_negative_prompts = strip_prompt_comments(p, apply_styles(p, negatives, negative=True))
    p.main_prompt = p.all_prompts[0]
    p.main_negative_prompt = p.all_negative_prompts[0]


def setup_hr_prompts(p: Any) -> None:
    """The hires pass's prompts; an empty hires prompt means "same as the first pass"."""
    if p.hr_prompt == "":
        p.hr_prompt = p.prompt
    if p.hr_negative_prompt == "":
        p.hr_negative_prompt = p.negative_prompt
    count = p.batch_size * p.n_iter
    prompts = list(p.hr_prompt) if isinstance(p.hr_prompt, list) else [p.hr_prompt] * count
    negatives = (list(p.hr_negative_prompt) if isinstance(p.hr_negative_prompt, list)
                 else [p.hr_negative_prompt] * count)
    p.all_hr_prompts = strip_prompt_comments(p, apply_styles(p, prompts, negative=False))
    p.all_hr_negative_prompts = strip_prompt_comments(p, apply_styles(p, negatives, negative=True))


# --- extra networks --------------------------------------------------------------------------------------------------

class LoraExtraNetwork(extra_networks.ExtraNetwork):
    """A1111's extra-network interface over :class:`modules.lora.LoraNetworks`.

    Register it (``extra_networks.register_extra_network(LoraExtraNetwork(networks))``) to make ``<lora:...>`` work
    everywhere; processing also uses one for ``p.lora_networks`` when no "lora" network is registered.
    """

    def __init__(self, networks: Any) -> None:
        super().__init__("lora")
        self.networks = networks

    def activate(self, p: Any, params_list: list) -> None:
        activation = self.networks.activate(p.sd_model, params_list)
        hashes = activation.hashes_infotext
        if hashes:
            p.extra_generation_params["Lora hashes"] = hashes
        for message in activation.comments:
            p.comment(message)

    def deactivate(self, p: Any) -> None:
        self.networks.deactivate(p.sd_model)


def activate_extra_networks(p: Any, data: dict[str, list] | None) -> None:
    """Activate the prompt's networks (registered ones, and ``p.lora_networks`` if "lora" is not registered)."""
    if p.disable_extra_networks:
        return
    data = dict(data or {})
    lora_networks = getattr(p, "lora_networks", None)
    if lora_networks is not None and "lora" not in extra_networks.extra_network_registry:
        params = list(data.pop("lora", [])) + list(data.pop("lyco", []))
        LoraExtraNetwork(lora_networks).activate(p, params)
    extra_networks.activate(p, data)


def deactivate_extra_networks(p: Any, data: dict[str, list] | None) -> None:
    if p.disable_extra_networks or not data:
        return
    extra_networks.deactivate(p, data)


# --- conditioning ----------------------------------------------------------------------------------------------------

def text_conditioner(p: Any) -> TextConditioner:
    """The model's conditioner with the current settings, embeddings and LoRA state."""
    model = p.sd_model
    conditioner = model.extras.get(CONDITIONER_KEY)
    if not isinstance(conditioner, TextConditioner):
        conditioner = TextConditioner(model)
        model.extras[CONDITIONER_KEY] = conditioner
    conditioner.options = ConditioningOptions.from_opts(p.opts)
    database = model.extras.get(EMBEDDING_DB_KEY)
    if database is not None:
        conditioner.embedding_lookup = database
    from modules.sd.lora import merge_state

    conditioner.cache_salt = merge_state(model).signature
    if not getattr(p.opts, "persistent_cond_cache", True):
        conditioner.clear_cache()
    return conditioner


def reload_embeddings(p: Any) -> None:
    """A1111 rescans the embeddings folders before each job unless told not to."""
    database = p.sd_model.extras.get(EMBEDDING_DB_KEY)
    if database is not None and not p.do_not_reload_embeddings:
        database.load_textual_inversion_embeddings(model=p.sd_model)


def schedule_steps(sampler_name: str | None, steps: int) -> int:
    """Prompt-schedule steps: second-order samplers call the model twice a step (A1111's ``total_steps``)."""
    try:
        second_order = registry.is_second_order(sampler_name)
    except ValueError:
        second_order = False
    return steps * 2 if second_order else steps


def compute_conds(p: Any, prompts: Sequence[str], negative_prompts: Sequence[str], width: int, height: int,
                  steps: int, hires_steps: int | None = None) -> tuple[Any, Any]:
    """(c, uc): multicond schedules of the prompts, plain schedules of the negative prompts."""
    conditioner = text_conditioner(p)
    conditioner.used_embeddings.clear()
    old_scheduling = bool(getattr(p.opts, "use_old_scheduling", False))
    positive = prompt_parser.SdConditioning(list(prompts), width=width, height=height)
    negative = prompt_parser.SdConditioning(list(negative_prompts), width=width, height=height,
                                            is_negative_prompt=True)
    if old_scheduling:
        old = prompt_parser.get_learned_conditioning_prompt_schedules(positive, steps, hires_steps, True)
        new = prompt_parser.get_learned_conditioning_prompt_schedules(positive, steps, hires_steps, False)
        if old != new:
            p.extra_generation_params["Old prompt editing timelines"] = True
    uc = prompt_parser.get_learned_conditioning(conditioner, negative, steps, hires_steps, old_scheduling)
    c = prompt_parser.get_multicond_learned_conditioning(conditioner, positive, steps, hires_steps, old_scheduling)
    _note_conditioning_extras(p, conditioner, [*prompts, *negative_prompts])
    return c, uc


def _note_conditioning_extras(p: Any, conditioner: TextConditioner, texts: list[str]) -> None:
    """"TI hashes" for the embeddings the prompts used and "Emphasis" when not the default."""
    emphasis = emphasis_infotext(texts, conditioner.options.emphasis)
    if emphasis:
        p.extra_generation_params["Emphasis"] = emphasis
    used = list(conditioner.used_embeddings.values())
    database = p.sd_model.extras.get(EMBEDDING_DB_KEY)
    if used and database is not None and getattr(p.opts, "add_model_hash_to_info", True):
        hashes = database.ti_hashes(used)
        if hashes:
            p.extra_generation_params["TI hashes"] = hashes


def empty_cond(p: Any) -> Any:
    """The empty prompt's encoding [tokens, C] (A1111's ``pad_cond_uncond`` pads with it)."""
    cond = text_conditioner(p).get_learned_conditioning([""])
    return (cond["crossattn"] if isinstance(cond, dict) else cond)[0]
