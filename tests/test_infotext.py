"""Tests for modules/infotext.py: A1111's infotext layout, quoting and parsing (processing.create_infotext and
infotext_utils.parse_generation_parameters are the references; expected strings are written out by hand)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from modules import infotext, shared
from modules.infotext import (
    INFOTEXT_KEY_ORDER,
    create_infotext_text,
    merge_generation_params,
    parse_generation_parameters,
    quote,
    resolve_param_values,
    split_infotext,
    unquote,
)
from modules.options import Options
from modules.shared_options import options_templates


@pytest.fixture(autouse=True)
def no_global_opts(monkeypatch):
    monkeypatch.setattr(shared, "opts", None)


def test_quote_only_when_needed():
    assert quote("Euler a") == "Euler a"
    assert quote(7) == 7
    assert quote("add_detail: 7c6bad76eb54") == '"add_detail: 7c6bad76eb54"'
    assert quote('a, "b"') == '"a, \\"b\\""'
    assert quote("猫\nx") == '"猫\\nx"'  # ensure_ascii=False keeps unicode readable
    assert unquote('"a: 1, b: 2"') == "a: 1, b: 2"
    assert unquote("plain") == "plain"
    assert unquote('"broken') == '"broken'
    assert unquote('"not json\\"') == '"not json\\"'


def test_layout_matches_a1111():
    params = {"Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7, "Seed": 1234,
              "Face restoration": None, "Size": "512x512", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
              "Tiling": "Tiling", "Lora hashes": "a: 1, b: 2", "Version": "v1.10.1"}
    text = create_infotext_text("a cat\nin a hat", "blurry", params)
    assert text == (
        "a cat\nin a hat\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Tiling, Lora hashes: "a: 1, b: 2", Version: v1.10.1'
    )
    assert create_infotext_text("p", "", {"Steps": 1}) == "p\nSteps: 1"
    assert create_infotext_text("", "", {"Steps": 1}) == "Steps: 1"


def test_merge_keeps_position_but_takes_extra_value():
    base = dict.fromkeys(INFOTEXT_KEY_ORDER)
    base.update({"Steps": 20, "Sampler": "Euler", "Schedule type": "Automatic"})
    merged = merge_generation_params(base, {"Hires steps": 10, "Schedule type": "Karras"}, {"Version": "v1"})
    keys = list(merged)
    assert merged["Schedule type"] == "Karras"
    assert keys.index("Schedule type") == keys.index("Sampler") + 1
    assert keys[-2:] == ["Hires steps", "Version"]


def test_resolve_param_values_lists_and_callables():
    params = {"A": [1, 2], "B": lambda index, **_: f"i{index}", "C": lambda: 1 / 0, "D": "x"}
    assert resolve_param_values(params, 1, {"index": 1}) == {"A": 2, "B": "i1", "C": None, "D": "x"}


A1111_EXAMPLE = (
    "girl with an artist's beret, determined, blue eyes, ((eyeshadow)), (coquettish), detailed, intricate\n"
    "Negative prompt: ugly, fat, (((deformed))), [blurry], bad anatomy\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x768, Model hash: 45dee52b"
)


def test_parse_a1111_docstring_example_with_defaults():
    res = parse_generation_parameters(A1111_EXAMPLE)
    assert res["Prompt"].startswith("girl with an artist's beret")
    assert res["Negative prompt"] == "ugly, fat, (((deformed))), [blurry], bad anatomy"
    assert (res["Steps"], res["Sampler"], res["CFG scale"], res["Seed"]) == ("20", "Euler a", "7", "965400086")
    assert (res["Size-1"], res["Size-2"]) == ("512", "768") and "Size" not in res
    defaults = {
        "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler", "Hires checkpoint": "Use same checkpoint", "Hires prompt": "",
        "Hires negative prompt": "", "Mask mode": "Inpaint masked", "Masked content": "original",
        "Inpaint area": "Whole picture", "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic",
        "Schedule max sigma": 0, "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full",
        "VAE Decoder": "Full", "FP8 weight": "Disable", "Emphasis": "Original",
        "Refiner switch by sampling steps": False,
    }
    for key, value in defaults.items():
        assert res[key] == value, key
    assert "Cache FP16 weight for LoRA" not in res


def test_parse_rules():
    # fewer than 3 key/value matches: the last line is prompt text
    res = parse_generation_parameters("a\nnote: b, c: d")
    assert res["Prompt"] == "a\nnote: b, c: d" and "note" not in res
    # no brackets -> no Emphasis default; quoted values decoded; skip_fields honoured
    res = parse_generation_parameters('x\nSteps: 3, Seed: 1, Lora hashes: "a: 1, b: 2", Clip skip: 2',
                                      skip_fields=["Seed"])
    assert res["Lora hashes"] == "a: 1, b: 2" and res["Clip skip"] == "2"
    assert "Emphasis" not in res and "Seed" not in res
    # hypernet is re-added to the prompt; FP8 on -> LoRA cache flag
    res = parse_generation_parameters("p\nSteps: 3, Hypernet: hn, Hypernet strength: 0.5, FP8 weight: Enable")
    assert res["Prompt"] == "p<hypernet:hn:0.5>" and res["Cache FP16 weight for LoRA"] is False


def test_old_hires_fix_and_version_backcompat():
    res = parse_generation_parameters("[a:b:3]\nSteps: 3, Sampler: DDIM, Size: 1024x768, First pass size: 0x0, "
                                      "Refiner: r, Version: v1.5.1")
    assert (res["Size-1"], res["Size-2"]) == (640, 448)  # ~512x512 pixels, each side rounded up to 64
    assert (res["Hires resize-1"], res["Hires resize-2"]) == (1024, 768)
    for flag in ("Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod",
                 "Refiner switch by sampling steps"):
        assert res[flag] is True, flag
    assert "Downcast alphas_cumprod" not in parse_generation_parameters("a\nSteps: 1, Seed: 2, Version: v1.10.1")


def test_override_settings_from_declared_infotext_labels():
    opts = Options(options_templates)
    pairs = ["Clip skip: 2", "ENSD: 31337", "Unknown: 1"]
    assert infotext.create_override_settings_dict(pairs, opts=opts) == {
        "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}
    got = infotext.get_override_settings({"Clip skip": "2", "RNG": "GPU", "ENSD": "5"}, skip_fields=["ENSD"],
                                         opts=opts)
    assert got == [("Clip skip", "CLIP_stop_at_last_layers", 2)]  # RNG equals the current value


def test_a1111_module_names_are_the_same_module():
    from modules import generation_parameters_copypaste, infotext_utils

    assert infotext_utils is infotext and generation_parameters_copypaste is infotext
    field = infotext_utils.PasteField("component", "Seed", api="seed")
    assert tuple(field) == ("component", "Seed") and field.label == "Seed" and field.api == "seed"


def test_import_does_not_load_torch():
    code = ("import sys, modules.infotext as m; m.parse_generation_parameters('(a)\\nSteps: 1, B: 2, C: 3'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- round trip ----------------------------------------------------------------------------------------------------

WORDS = ["cat", "café", "猫", "🙂", "(masterpiece:1.2)", "[a:b:0.5]", "x,y", "key: value", '"quoted"', "it's",
         "Negative prompt: inside", "a\\b", "<lora:add_detail:0.7>", "1girl", "BREAK", "Steps: 20, Seed: 1, Size: 1x1"]
KEYS = ["Hires upscale", "Hires upscaler", "Lora hashes", "TI hashes", "ADetailer model", "Mask blur", "Eta",
        "Noise multiplier", "Hires prompt", "ControlNet 0", "Module 1", "Refiner switch at", "Emphasis",
        "Token merging ratio hr", "Schedule max sigma", "Wildcard/prompt", "Old-style key"]


def _prompt(rng: random.Random) -> str:
    lines = []
    for i in range(rng.randint(0, 3)):
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
        if i and line.startswith("Negative prompt:"):
            line = "x " + line
        lines.append(line)
        if i and rng.random() < 0.2:
            lines.append("")  # blank line inside a prompt survives
    while lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith("Negative prompt:"):
        lines[0] = "x " + lines[0]
    return "\n".join(lines)


def _value(rng: random.Random) -> object:
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randint(0, 2**32)
    if choice == 1:
        return round(rng.uniform(0, 30), 3)
    if choice == 2:
        return None
    if choice == 3:
        return f"{rng.choice(['a', 'lora'])}: {rng.randint(0, 9)}, b: {rng.randint(0, 9)}"
    if choice == 4:
        return 'say "hi", then\nleave: ' + rng.choice(WORDS)
    if choice == 5:
        return rng.choice(["Euler a", "DPM++ 2M SDE", "猫", "4x-UltraSharp", "R-ESRGAN 4x+", "x\"y"])
    if choice == 6:
        return f"{rng.randint(1, 4096)}x{rng.randint(1, 4096)}"
    return rng.choice(WORDS) + " " + rng.choice(WORDS)


def _params(rng: random.Random) -> dict[str, object]:
    params: dict[str, object] = {"Steps": rng.randint(1, 150), "Sampler": rng.choice(["Euler a", "DPM++ 2M"]),
                                 "CFG scale": rng.choice([7, 7.5, 1.0]), "Seed": rng.randint(0, 4294967294),
                                 "Size": f"{rng.randint(1, 32) * 64}x{rng.randint(1, 32) * 64}"}
    for key in rng.sample(KEYS, rng.randint(0, 6)):
        params[key] = _value(rng)
    return params


@pytest.mark.parametrize("case", range(60))
def test_write_parse_write_is_identity(case):
    rng = random.Random(case)
    prompt, negative, params = _prompt(rng), _prompt(rng), _params(rng)
    text = create_infotext_text(prompt, negative, params)

    parsed_prompt, parsed_negative, parsed = split_infotext(text)
    assert (parsed_prompt, parsed_negative) == (prompt, negative)
    assert create_infotext_text(parsed_prompt, parsed_negative, parsed) == text

    full = parse_generation_parameters(text)
    assert (full["Prompt"], full["Negative prompt"]) == (prompt, negative)
    for key, value in params.items():
        if value is None:
            assert key not in parsed
        elif infotext.re_imagesize.match(str(value)):
            assert f"{full[key + '-1']}x{full[key + '-2']}" == value
        else:
            assert full[key] == str(value), key
