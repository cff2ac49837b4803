"""The in-process backend: a tiny randomly initialised GPT-2 (2 layers, 32 wide) with a word-level tokenizer, saved
by the test under models/code-translator/<name>, streams through TextIteratorStreamer and gives exactly what
``generate`` gives; folder names are checked and the context limit is reported."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from code_translator.errors import ContextLengthExceeded, LocalModelError  # noqa: E402
from code_translator.local_backend import LocalBackend, local_model_names, render_prompt  # noqa: E402
from code_translator.prompts import build_messages  # noqa: E402
from code_translator.settings import LOCAL, TranslatorConfig, make_backend  # noqa: E402
from code_translator.translator import TranslationJob, translate  # noqa: E402

WORDS = ("def function return print let const for in range if else total add numbers the a code x y i "
         "Python JavaScript Example from to Now yours Natural language : ( ) { } ; = + - . , \" ` 1 10 0").split()


def save_tiny_model(folder: Path, positions: int = 1024) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "[EOS]": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                        eos_token="[EOS]")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=2, eos_token_id=2)
    model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = None  # a random model may pick EOS at once; always run to the limit
    model.generation_config.suppress_tokens = [0, 1, 2]  # and special tokens, which decode to nothing
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    save_tiny_model(root / "code-translator" / "tiny-gpt2")
    save_tiny_model(root / "code-translator" / "short-context", positions=16)
    return root


def test_tiny_model_streams_what_generate_gives(models_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = models_dir / "code-translator" / "tiny-gpt2"
    backend = make_backend(LOCAL, TranslatorConfig(model="tiny-gpt2", max_tokens=12), "", models_dir)
    assert isinstance(backend, LocalBackend)
    job = TranslationJob("Python", "JavaScript", "for i in range ( 10 ) :\n  print ( i )\n")
    updates = list(translate(job, backend))
    last = updates[-1]
    assert last.error is None, last.status
    assert last.status == "Done. Warning: the reply stopped at the max-tokens limit; raise Max tokens."
    assert len([u for u in updates if u.delta]) >= 2  # it arrived in pieces
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = render_prompt(tokenizer, build_messages("Python", "JavaScript", job.code))
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=1)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert expected.strip() and last.output == expected


def test_stop_ends_generation_early(models_dir: Path):
    backend = LocalBackend(models_dir / "code-translator" / "tiny-gpt2", max_new_tokens=200)
    cancel = threading.Event()
    pieces = []
    for piece in backend.stream(build_messages("Python", "JavaScript", "x = 1"), cancel):
        pieces.append(piece)
        cancel.set()
    assert 1 <= len(pieces) < 10 and backend.finish_reason == "stop"


def test_local_model_names_and_errors(models_dir: Path):
    assert local_model_names(models_dir) == ["short-context", "tiny-gpt2"]
    with pytest.raises(LocalModelError, match="No transformers model named 'missing'.*Found: short-context, tiny"):
        make_backend(LOCAL, TranslatorConfig(model="missing"), "", models_dir)
    with pytest.raises(LocalModelError, match="is not a model folder name"):
        make_backend(LOCAL, TranslatorConfig(model="../tiny-gpt2"), "", models_dir)
    backend = make_backend(LOCAL, TranslatorConfig(model="short-context"), "", models_dir)
    last = list(translate(TranslationJob("Python", "JavaScript", "x = 1"), backend))[-1]
    assert isinstance(last.error, ContextLengthExceeded)
    assert "handles at most 16" in last.status and "Chunk size" in last.status
