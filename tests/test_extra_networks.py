"""Tests for modules/extra_networks.py: `<name:args>` tag parsing and the activate/deactivate protocol."""

from __future__ import annotations

import pytest

from modules import extra_networks
from modules.extra_networks import ExtraNetwork, ExtraNetworkParams, parse_extra_networks, parse_prompts

# (prompt, prompt without tags, {name: [items of each tag]})
TAGS = [
    ("a cat", "a cat", {}),
    ("a <lora:cat:0.8> cat", "a  cat", {"lora": [["cat", "0.8"]]}),
    ("<lora:a:1><lora:b:0.5:0.2>x", "x", {"lora": [["a", "1"], ["b", "0.5", "0.2"]]}),
    ("<lora:c:te=1:unet=0.5:dyn=4>", "", {"lora": [["c", "te=1", "unet=0.5", "dyn=4"]]}),
    ("<hypernet:agm:1.1> <lyco:x>", " ", {"hypernet": [["agm", "1.1"]], "lyco": [["x"]]}),
    ("<lora:name with spaces:1>", "", {"lora": [["name with spaces", "1"]]}),
    ("<lora:sub/dir\\model:1>", "", {"lora": [["sub/dir\\model", "1"]]}),
    ("<lora:a::1>", "", {"lora": [["a", "", "1"]]}),
    ("<lora:>", "<lora:>", {}),  # [^>]+ needs at least one character
    ("<lora>", "<lora>", {}),
    ("<my-net:x>", "<my-net:x>", {}),  # \w+ name: no hyphen
    ("<lora:a<b:1>", "", {"lora": [["a<b", "1"]]}),  # arguments may contain "<"; the tag ends at the first ">"
    ("<a:1> > <b:2>", " > ", {"a": [["1"]], "b": [["2"]]}),
    ("<lora:a:1", "<lora:a:1", {}),
    ("(<lora:a:1>:1.2) [b:c:3]", "(:1.2) [b:c:3]", {"lora": [["a", "1"]]}),
    ("<LoRA:a:1>", "", {"LoRA": [["a", "1"]]}),  # names are case-sensitive keys
]


@pytest.mark.parametrize(("prompt", "stripped", "expected"), TAGS)
def test_parse_tags(prompt: str, stripped: str, expected: dict):
    text, found = parse_extra_networks(prompt)
    assert text == stripped
    assert {name: [params.items for params in found[name]] for name in found} == expected


def test_params_split_positional_and_named():
    params = ExtraNetworkParams(["cat", "0.8", "te=1", "unet=0.5", "a=b=c", "=x"])
    assert params.positional == ["cat", "0.8", "a=b=c"]  # two "=" is not a named item (A1111 splits with maxsplit 2)
    assert params.named == {"te": "1", "unet": "0.5", "": "x"}
    assert params == ExtraNetworkParams(["cat", "0.8", "te=1", "unet=0.5", "a=b=c", "=x"])
    assert ExtraNetworkParams().items == [] and ExtraNetworkParams(None).positional == []
    assert ExtraNetworkParams([1.5]).positional == [1.5]


def test_only_first_prompt_decides_networks():
    prompts, data = parse_prompts(["a <lora:x:1>", "b <lora:y:1>", "c"])
    assert prompts == ["a ", "b ", "c"]
    assert [params.items for params in data["lora"]] == [["x", "1"]]
    assert parse_prompts([]) == ([], None)


class Recorder(ExtraNetwork):
    def __init__(self, name: str, log: list, fail: bool = False):
        super().__init__(name)
        self.log = log
        self.fail = fail

    def activate(self, p, params_list):
        if self.fail:
            raise RuntimeError("boom")
        self.log.append(("activate", self.name, [params.items for params in params_list]))

    def deactivate(self, p):
        self.log.append(("deactivate", self.name))


@pytest.fixture
def registry():
    """A clean registry for the test; whatever was registered before is put back afterwards."""
    saved_networks = dict(extra_networks.extra_network_registry)
    saved_aliases = dict(extra_networks.extra_network_aliases)
    extra_networks.initialize()
    yield
    extra_networks.initialize()
    extra_networks.extra_network_registry.update(saved_networks)
    extra_networks.extra_network_aliases.update(saved_aliases)


def test_activate_named_then_all_others_with_empty_list(registry):
    log: list = []
    lora, hyper = Recorder("lora", log), Recorder("hypernet", log)
    extra_networks.register_extra_network(lora)
    extra_networks.register_extra_network(hyper)
    extra_networks.register_extra_network_alias(lora, "lyco")
    _, data = parse_extra_networks("<lyco:b:1> <lora:a:0.5> <unknown:z>")
    extra_networks.activate(object(), data)
    assert log == [("activate", "lora", [["b", "1"], ["a", "0.5"]]), ("activate", "hypernet", [])]
    log.clear()
    extra_networks.deactivate(object(), data)
    assert log == [("deactivate", "lora"), ("deactivate", "hypernet")]


def test_activate_survives_a_failing_network_and_calls_script_hook(registry, caplog):
    log: list = []
    extra_networks.register_extra_network(Recorder("bad", log, fail=True))
    extra_networks.register_extra_network(Recorder("good", log))
    hook_calls = []

    class Scripts:
        def after_extra_networks_activate(self, p, **kwargs):
            hook_calls.append(kwargs)

    class P:
        scripts = Scripts()
        iteration, prompts, seeds, subseeds = 2, ["x"], [1], [2]

    extra_networks.activate(P(), {"bad": [ExtraNetworkParams(["a"])]})
    assert log == [("activate", "good", [])]
    assert "bad" in caplog.text
    data = {"bad": [ExtraNetworkParams(["a"])]}
    expected = {"batch_number": 2, "prompts": ["x"], "seeds": [1], "subseeds": [2], "extra_network_data": data}
    assert hook_calls == [expected]


def test_base_class_requires_overrides():
    network = ExtraNetwork("x")
    with pytest.raises(NotImplementedError):
        network.activate(None, [])
    with pytest.raises(NotImplementedError):
        network.deactivate(None)
