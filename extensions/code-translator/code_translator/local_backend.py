"""Run a transformers causal language model from ``models/code-translator/<name>`` in this process, streaming its
reply with ``TextIteratorStreamer`` — no server needed, and nothing is downloaded.

One model is kept loaded; one generation runs at a time (a second request waits for the first).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from code_translator.errors import ContextLengthExceeded, LocalModelError, StreamInterrupted

MODELS_SUBFOLDER = "code-translator"

_loaded: dict[str, Any] = {}
_load_lock = threading.Lock()
_generate_lock = threading.Lock()


def local_model_names(models_dir: Path) -> list[str]:
    """The model folders under ``<models_dir>/code-translator`` (those with a config.json)."""
    folder = models_dir / MODELS_SUBFOLDER
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())


def resolve_model_dir(models_dir: Path, name: str) -> Path:
    """The folder for ``name``: a plain name under ``models/code-translator`` only (no paths from requests)."""
    folder = models_dir / MODELS_SUBFOLDER
    if not name or Path(name).name != name or name in (".", ".."):
        raise LocalModelError(f"'{name}' is not a model folder name.",
                              f"Use the name of a folder in {folder}.")
    path = folder / name
    if not (path / "config.json").is_file():
        names = local_model_names(models_dir)
        offered = f" Found: {', '.join(names)}." if names else " There are none yet."
        raise LocalModelError(f"No transformers model named '{name}' in {folder}.{offered}",
                              "Save a causal LM there with save_pretrained (config.json, weights, tokenizer files).")
    return path


def _load(path: Path) -> tuple[Any, Any]:
    key = str(path.resolve())
    with _load_lock:
        if key not in _loaded:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
            except Exception as exc:
                raise LocalModelError(f"The model in {path} could not be loaded: {exc}",
                                      "It must be a transformers causal LM saved with its tokenizer.") from exc
            model.eval()
            _loaded.clear()  # keep one model in memory
            _loaded[key] = (tokenizer, model)
        return _loaded[key]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's chat template when it has one; otherwise a plain transcript that ends where the reply starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


def _context_limit(model: Any) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class LocalBackend:
    """A model folder under ``models/code-translator``; ``stream(messages)`` yields the reply's text pieces."""

    def __init__(self, model_dir: Path, max_new_tokens: int = 1024, temperature: float = 0.0) -> None:
        self.model_dir = model_dir
        self.max_new_tokens = max_new_tokens if max_new_tokens > 0 else 1024
        self.temperature = temperature
        self.finish_reason: str | None = None

    def describe(self) -> str:
        return f"local model {self.model_dir.name}"

    def stream(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer, model = _load(self.model_dir)
        inputs = tokenizer(render_prompt(tokenizer, messages), return_tensors="pt")
        prompt_tokens = int(inputs["input_ids"].shape[1])
        limit = _context_limit(model)
        if limit is not None and prompt_tokens >= limit:
            raise ContextLengthExceeded(
                f"The prompt has {prompt_tokens} tokens but {self.model_dir.name} handles at most {limit}.",
                "Lower 'Chunk size (tokens)' so long files are split into smaller parts.")
        new_tokens = self.max_new_tokens if limit is None else min(self.max_new_tokens, limit - prompt_tokens)
        stop = threading.Event()  # set when the reader goes away
        cancelled = cancel or threading.Event()  # set by the caller (Stop button)

        class StopOnCancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set() or cancelled.is_set(), dtype=torch.bool)

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else \
            {"do_sample": False}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        failure: list[BaseException] = []
        produced = {"tokens": 0}

        def generate() -> None:
            try:
                with torch.inference_mode():
                    out = model.generate(**inputs, streamer=streamer, max_new_tokens=new_tokens, pad_token_id=pad_id,
                                         stopping_criteria=StoppingCriteriaList([StopOnCancel()]), **sampling)
                produced["tokens"] = int(out.shape[1]) - prompt_tokens
            except BaseException as exc:  # reported to the reader below; the streamer must still be ended
                failure.append(exc)
                streamer.end()

        with _generate_lock:
            worker = threading.Thread(target=generate, name="code-translator-generate", daemon=True)
            worker.start()
            try:
                for text in streamer:
                    if text:
                        yield text
            finally:
                stop.set()  # also stops generation when the reader goes away (Stop button, closed request)
                worker.join()
        if failure:
            raise StreamInterrupted(f"The local model stopped with an error: {failure[0]}",
                                    "See the server log for the traceback.")
        self.finish_reason = "length" if produced["tokens"] >= new_tokens else "stop"
