"""The infotext of a generated image (A1111's ``processing.create_infotext``) and the model facts it names.

Kept apart from the pipeline because the API, the UI ("params.txt", PNG Info) and scripts (X/Y/Z plot) all call
``create_infotext`` with a processing object, also for images that were never sampled. Formatting and quoting are
``modules.infotext``'s; this module decides *which* values go in, in A1111's order.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from modules import infotext
from modules.samplers import registry

log = logging.getLogger(__name__)

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def program_version() -> str:
    """``atelier-<version>``: deliberately not A1111's ``v1.x.y`` form, so A1111's version back-compat rules (which
    switch on old-behaviour flags for versions < 1.6) never misfire on our images."""
    try:
        match = re.search(r'^version\s*=\s*"([^"]+)"', _PYPROJECT.read_text(encoding="utf8"), re.M)
    except OSError:
        match = None
    return f"atelier-{match.group(1) if match else 'dev'}"


def model_name_and_hash(model: Any, cache_file: str | Path | None = None) -> tuple[str | None, str | None]:
    """(A1111's ``name_for_extra``: the file stem, short sha256 hash), cached in ``model.extras``.

    A model without a file (built in memory) has neither. The sha256 is read from ``model.extras["sha256"]`` when the
    loader already knows it, else computed once (through the cache file when given).
    """
    extras = getattr(model, "extras", None)
    if extras is None:
        extras = {}
    path = getattr(model, "path", None)
    if path is None:
        return extras.get("name"), extras.get("shorthash")
    name = extras.get("name") or Path(path).stem
    sha256 = extras.get("sha256")
    if sha256 is None:
        from modules.sd import hashes

        try:
            if cache_file is not None:
                sha256 = hashes.cached_sha256(path, cache_file, f"checkpoint/{Path(path).name}")
            else:
                sha256 = hashes.sha256_of_file(path)
        except OSError as e:
            log.warning("Could not hash %s: %s", path, e)
            return name, None
        extras["sha256"] = sha256
    return name, hashes_short(sha256)


def hashes_short(sha256: str) -> str:
    return sha256[:10]


def uses_ensd(p: Any) -> bool:
    """A1111 writes ENSD only for samplers that draw noise after the first step (``uses_ensd`` in the table)."""
    opts = p.opts
    if not getattr(opts, "eta_noise_seed_delta", 0):
        return False
    try:
        sampler = registry.find_sampler(p.sampler_name)
    except ValueError:
        return False
    return bool(sampler.options.get("uses_ensd", False))


def base_generation_params(p: Any, all_seeds: list, all_subseeds: list, index: int,
                           use_main_prompt: bool) -> dict[str, Any]:
    """The fixed keys of A1111's infotext, in its order (None = not written)."""
    opts = p.opts
    clip_skip = getattr(p, "clip_skip", None) or getattr(opts, "CLIP_stop_at_last_layers", 1)
    randn_source = getattr(opts, "randn_source", "GPU")
    subseed_used = p.subseed_strength != 0
    return {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale,
        "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index],
        "Face restoration": getattr(opts, "face_restoration_model", None) if p.restore_faces else None,
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.sd_model_hash if getattr(opts, "add_model_hash_to_info", True) else None,
        "Model": p.sd_model_name if getattr(opts, "add_model_name_to_info", True) else None,
        "VAE hash": p.sd_vae_hash if getattr(opts, "add_vae_hash_to_info", True) else None,
        "VAE": p.sd_vae_name if getattr(opts, "add_vae_name_to_info", True) else None,
        "Variation seed": (p.all_subseeds[0] if use_main_prompt else all_subseeds[index]) if subseed_used else None,
        "Variation seed strength": p.subseed_strength if subseed_used else None,
        "Seed resize from": (f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"
                             if p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0 else None),
        "Denoising strength": p.extra_generation_params.get("Denoising strength"),
        "Conditional mask weight": (getattr(p, "inpainting_mask_weight", getattr(opts, "inpainting_mask_weight", 1.0))
                                    if p.is_using_inpainting_conditioning else None),
        "Clip skip": clip_skip if clip_skip > 1 else None,
        "ENSD": getattr(opts, "eta_noise_seed_delta", 0) if uses_ensd(p) else None,
        "Init image hash": getattr(p, "init_img_hash", None),
        "RNG": randn_source if randn_source != "GPU" else None,
        "Tiling": "True" if p.tiling else None,
    }


def create_infotext(p: Any, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int],
                    comments: Any = None, iteration: int = 0, position_in_batch: int = 0,
                    use_main_prompt: bool = False, index: int | None = None,
                    all_negative_prompts: list[str] | None = None) -> str:
    """A1111's infotext for image ``index`` (default ``position_in_batch + iteration * batch_size``).

    ``p.extra_generation_params`` values may be plain, per-image lists, or callables ``f(p=..., index=..., **kw)``.
    """
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts

    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else all_negative_prompts[index]
    opts = p.opts
    tail = {
        "Version": program_version() if getattr(opts, "add_version_to_infotext", True) else None,
        "User": p.user if getattr(opts, "add_user_name_to_info", False) else None,
    }
    params = infotext.merge_generation_params(
        base_generation_params(p, all_seeds, all_subseeds, index, use_main_prompt), p.extra_generation_params, tail)
    context = {"p": p, "index": index, "prompt_text": prompt_text, "negative_prompt": negative_prompt,
               "all_prompts": all_prompts, "all_seeds": all_seeds, "all_subseeds": all_subseeds,
               "iteration": iteration, "position_in_batch": position_in_batch, "use_main_prompt": use_main_prompt,
               "comments": comments, "all_negative_prompts": all_negative_prompts}
    params = {key: _resolve(key, value, index, context) for key, value in params.items()}
    return infotext.create_infotext_text(prompt_text, negative_prompt, params)


def _resolve(key: str, value: Any, index: int, context: dict[str, Any]) -> Any:
    """A per-image list is indexed, a callable is called with the caller's locals; a failure drops the key."""
    try:
        if isinstance(value, list):
            return value[index]
        if callable(value):
            return value(**context)
    except Exception:
        log.exception("Error creating infotext for key %r", key)
        return None
    return value
