"""The translator against a real scripted OpenAI-compatible server on 127.0.0.1: the three prompt branches, the
SSE quirks (role-only chunk, usage chunk without choices, no [DONE], code fences), and each failure's own message
with the partial output kept — in the translator and in the tab's handler, which keeps working afterwards."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from code_translator.errors import (  # noqa: E402
    AuthenticationFailed,
    ContextLengthExceeded,
    ServerTimeout,
    ServerUnreachable,
    StreamInterrupted,
    UnknownModel,
)
from code_translator.prompts import IDENTITY  # noqa: E402
from code_translator.server_backend import ServerBackend, ServerSettings  # noqa: E402
from code_translator.settings import BACKEND_LABELS, SERVER, HostContext, resolve_api_key  # noqa: E402
from code_translator.translator import TranslationJob, Update, translate  # noqa: E402
from code_translator.ui import TabHandlers  # noqa: E402
from ct_fake_openai import Reply, ScriptedChatServer  # noqa: E402

from tests.conftest import free_port  # noqa: E402

PY_SOURCE = "def add(a, b):\n    return a + b\n"
JS_DELTAS = ["function add(a, b) {\n", "  return a + b;\n", "}\n"]


def run(job: TranslationJob, url: str, **settings) -> list[Update]:
    backend = ServerBackend(ServerSettings(base_url=url, model=settings.pop("model", "test-model"), **settings))
    return list(translate(job, backend))


@pytest.mark.parametrize(("source_language", "target_language", "source", "task", "label", "cue"), [
    ("Natural Language", "Python", "Add two numbers and return the sum.", 'Write "Python" code',
     "Natural language:\nAdd two numbers and return the sum.", "Python code (no ```):"),
    ("Python", "Natural Language", PY_SOURCE, 'Explain what the "Python" code does',
     f"Python code:\n{PY_SOURCE}", "Natural language:"),
    ("Python", "JavaScript", PY_SOURCE, 'Translate the "Python" code into "JavaScript" code',
     f"Python code:\n{PY_SOURCE}", "JavaScript code (no ```):"),
])
def test_each_branch_sends_its_prompt_and_streams_the_deltas(source_language, target_language, source, task, label,
                                                             cue):
    with ScriptedChatServer([Reply(JS_DELTAS)]) as server:
        updates = run(TranslationJob(source_language, target_language, source), server.url)
    assert updates[-1].done and updates[-1].error is None, updates[-1].status
    assert updates[-1].output == "".join(JS_DELTAS)
    assert "".join(u.delta for u in updates) == "".join(JS_DELTAS)
    outputs = [u.output for u in updates]
    assert "function add(a, b) {\n" in outputs  # the text grew piece by piece
    (request,) = server.requests
    assert request["stream"] is True and request["model"] == "test-model" and request["temperature"] == 0
    system, user = request["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert system["content"].startswith(IDENTITY) and task in system["content"]
    assert "Example, from " in user["content"]  # the one worked example comes first
    assert label in user["content"]
    assert user["content"].endswith(cue)
    if target_language == "Natural Language":
        assert 'bullet points, each line starting with "-"' in system["content"]
    else:
        assert "no ``` fences" in system["content"]


def test_no_done_no_usage_and_fences_are_tolerated():
    replies = [Reply(["```javascript\n", "let x = 1;\n", "```"], done=False, usage=False)]
    with ScriptedChatServer(replies) as server:
        updates = run(TranslationJob("Python", "JavaScript", "x = 1\n"), server.url)
    assert updates[-1].error is None and updates[-1].output == "let x = 1;\n"


def test_connection_refused_names_the_server():
    url = f"http://127.0.0.1:{free_port()}/v1"
    last = run(TranslationJob("Python", "JavaScript", PY_SOURCE), url)[-1]
    assert isinstance(last.error, ServerUnreachable)
    assert f"Cannot reach the server at {url}" in last.status and "refused" in last.status
    assert "Something went wrong" not in last.status


def test_wrong_key_gives_401_message_without_echoing_the_key():
    with ScriptedChatServer([Reply(JS_DELTAS)], api_key="right-key") as server:
        last = run(TranslationJob("Python", "JavaScript", PY_SOURCE), server.url, api_key="wrong-key-123")[-1]
        assert server.auth_headers == ["Bearer wrong-key-123"]
    assert isinstance(last.error, AuthenticationFailed) and last.error.status_code == 401
    assert "rejected the API key (HTTP 401" in last.status
    assert "wrong-key-123" not in last.status


def test_unknown_model_lists_the_servers_models():
    with ScriptedChatServer([Reply(JS_DELTAS)], models=("test-model", "coder-7b")) as server:
        last = run(TranslationJob("Python", "JavaScript", PY_SOURCE), server.url, model="gpt-9")[-1]
    assert isinstance(last.error, UnknownModel)
    assert last.error.available == ["coder-7b", "test-model"]
    assert "does not know the model 'gpt-9'. It offers: coder-7b, test-model." in last.status


def test_mid_stream_disconnect_keeps_the_partial_output():
    with ScriptedChatServer([Reply(["part one\n", "part two\n", "never sent\n"], disconnect_after=2)]) as server:
        updates = run(TranslationJob("Python", "JavaScript", PY_SOURCE), server.url)
    last = updates[-1]
    assert isinstance(last.error, StreamInterrupted)
    assert last.output == "part one\npart two\n"
    assert "broke in the middle of the reply" in last.status and "are kept" in last.status


def test_context_length_error_points_at_the_chunk_size():
    too_long = {"message": "This model's maximum context length is 4096 tokens. However, your messages resulted "
                           "in 9000 tokens.", "type": "invalid_request_error", "code": "context_length_exceeded"}
    with ScriptedChatServer([Reply(status=400, error=too_long)]) as server:
        last = run(TranslationJob("Python", "JavaScript", PY_SOURCE), server.url)[-1]
    assert isinstance(last.error, ContextLengthExceeded)
    assert "does not fit in the model's context" in last.status and "Chunk size" in last.status


def test_slow_server_times_out_with_the_limit_named():
    with ScriptedChatServer([Reply(JS_DELTAS, delay_s=1.5)]) as server:
        last = run(TranslationJob("Python", "JavaScript", PY_SOURCE), server.url, timeout_s=0.4)[-1]
    assert isinstance(last.error, ServerTimeout) and "within 0.4 s" in last.status


def test_environment_key_goes_only_to_the_configured_server_or_openai():
    env = {"OPENAI_API_KEY": "sk-env"}
    assert resolve_api_key("", "http://a/v1/", "http://a/v1", env) == "sk-env"
    assert resolve_api_key("", "https://api.openai.com/v1", "http://a/v1", env) == "sk-env"
    assert resolve_api_key("", "http://elsewhere/v1", "http://a/v1", env) == ""
    assert resolve_api_key(" typed ", "http://elsewhere/v1", "http://a/v1", env) == "typed"


def host_for(base_url: str) -> HostContext:
    opts = SimpleNamespace(data={"code_translator_base_url": base_url, "code_translator_model": "test-model"})
    return HostContext(lambda: opts, lambda: None, lambda: None)


def tab_translate(handlers: TabHandlers, base_url: str = "", api_key: str = ""):
    return list(handlers.translate(BACKEND_LABELS[SERVER], base_url, api_key, "", "Python", "JavaScript", PY_SOURCE))


def test_tab_shows_errors_keeps_partial_output_and_stays_usable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    script = [Reply(["partial\n", "more\n", "lost\n"], disconnect_after=2), Reply(JS_DELTAS)]
    with ScriptedChatServer(script, api_key="sk-env-secret") as server:
        handlers = TabHandlers(host_for(server.url))
        output, status, *_, download = tab_translate(handlers, base_url=dead)[-1]
        assert status.startswith("Error: Cannot reach the server") and download is None
        output, status, *_ = tab_translate(handlers)[-1]  # the configured server: the environment key is sent
        assert (output, status.split(" ")[0]) == ("partial\nmore\n", "Error:")
        assert "broke in the middle" in status
        output, status, *_, download = tab_translate(handlers)[-1]
        assert output == "".join(JS_DELTAS) and status == "Done."
        assert Path(download).name == "translation.js" and Path(download).read_text() == output
        assert all(header == "Bearer sk-env-secret" for header in server.auth_headers)
        # typed into the tab with another base URL, the environment key is not sent there
        other = TabHandlers(host_for("http://127.0.0.1:9/v1"))
        output, status, *_ = tab_translate(other, base_url=server.url)[-1]
        assert "rejected the API key" in status and "sk-env-secret" not in status
        assert server.auth_headers[-1] == "Bearer no-key"


def test_tab_rejects_bad_input_with_a_message():
    handlers = TabHandlers(host_for("http://127.0.0.1:9/v1"))
    (_, status, *_), = list(handlers.translate(BACKEND_LABELS[SERVER], "", "", "", "Python", "Python", "x = 1"))
    assert status == "Error: The input and output languages are both Python. Pick a different output language."
    (_, status, *_), = list(handlers.translate(BACKEND_LABELS[SERVER], "", "", "", "Python", "Klingon", "x = 1"))
    assert status.startswith("Error: Unknown output language 'Klingon'.")
    (_, status, *_), = list(handlers.translate(BACKEND_LABELS[SERVER], "", "", "", "Python", "Go", "  \n"))
    assert status.startswith("Error: There is no input to translate.")


def test_a_failing_backend_is_reported_and_its_partial_output_kept():
    class Crashing:
        finish_reason = None

        def describe(self) -> str:
            return "crashing backend"

        def stream(self, messages, cancel=None):
            yield "let kept = 1;\n"
            raise RuntimeError("GPU fell off")

    last = list(translate(TranslationJob("Python", "JavaScript", PY_SOURCE), Crashing()))[-1]
    assert isinstance(last.error, StreamInterrupted) and last.output == "let kept = 1;\n"
    assert last.status == "The backend failed: RuntimeError: GPU fell off. See the server log."
