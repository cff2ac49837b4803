"""Verify mode: a Python program and scripted JavaScript translations run on the same stdin — a correct one passes,
a wrong one shows both outputs and the diff, and one repair round (the failure sent back to the model) fixes it.
Also the runner's limits: time, output size, a bare environment, compile errors."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from code_translator.errors import VerifyUnavailable  # noqa: E402
from code_translator.runtimes import OUTPUT_CAP, run_program  # noqa: E402
from code_translator.server_backend import ServerBackend, ServerSettings  # noqa: E402
from code_translator.settings import run_allowed  # noqa: E402
from code_translator.translator import TranslationJob, translate  # noqa: E402
from code_translator.verify import split_inputs  # noqa: E402
from ct_fake_openai import Reply, ScriptedChatServer  # noqa: E402

from modules.cmd_args import parse_args  # noqa: E402

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="JavaScript verify needs node on PATH")

PYTHON_SOURCE = "n = int(input())\nfor i in range(1, n + 1):\n    print(i * i)\n"
JS_CORRECT = ("const n = parseInt(require('fs').readFileSync(0, 'utf8'));\n"
              "for (let i = 1; i <= n; i++) {\n  console.log(i * i);\n}\n")
JS_WRONG = JS_CORRECT.replace("i <= n", "i < n")  # one square short
INPUTS = "3\n---\n5\n"


def verify_run(server: ScriptedChatServer, repair_rounds: int = 0):
    backend = ServerBackend(ServerSettings(base_url=server.url, model="test-model"))
    job = TranslationJob("Python", "JavaScript", PYTHON_SOURCE, verify_inputs=INPUTS, repair_rounds=repair_rounds)
    return list(translate(job, backend))


@needs_node
def test_correct_translation_passes():
    with ScriptedChatServer([Reply([JS_CORRECT[:40], JS_CORRECT[40:]])]) as server:
        last = verify_run(server)[-1]
    assert last.error is None and last.report is not None and last.report.passed
    assert last.status == "Done. Verify: outputs match (2/2 input cases)."
    assert last.report.source_output() == ("# case 1\n1\n4\n9\n\n[exit code 0]\n\n"
                                           "# case 2\n1\n4\n9\n16\n25\n\n[exit code 0]")
    assert last.report.translation_output() == last.report.source_output()


@needs_node
def test_wrong_translation_shows_the_diff():
    with ScriptedChatServer([Reply([JS_WRONG])]) as server:
        last = verify_run(server)[-1]
    report = last.report
    assert not report.passed and last.output == JS_WRONG
    assert last.status == "Done. Verify: outputs differ (0/2 input cases)."
    assert "-9" in report.diff() and "-25" in report.diff() and "--- source output" in report.diff()
    assert report.translation_output().startswith("# case 1\n1\n4\n\n[exit code 0]")


@needs_node
def test_one_repair_round_fixes_it():
    with ScriptedChatServer([Reply([JS_WRONG]), Reply(["```js\n", JS_CORRECT, "```\n"])]) as server:
        updates = verify_run(server, repair_rounds=1)
    last = updates[-1]
    assert last.report.passed and last.output == JS_CORRECT
    assert last.status == "Done. Verify: outputs match (2/2 input cases) after 1 repair round."
    assert any(u.restarted for u in updates)  # the output started over for the repaired version
    first, repair = server.requests
    assert [m["role"] for m in repair["messages"]] == ["system", "user", "assistant", "user"]
    assert repair["messages"][:2] == first["messages"]
    assert repair["messages"][2]["content"] == JS_WRONG
    feedback = repair["messages"][3]["content"]
    assert "Input (stdin):\n3\n" in feedback and "Original program output:\n1\n4\n9\n" in feedback
    assert "Translated program output:\n1\n4\n" in feedback and "-9" in feedback


@needs_node
def test_repair_rounds_stop_when_the_budget_is_spent():
    with ScriptedChatServer([Reply([JS_WRONG]), Reply([JS_WRONG]), Reply([JS_WRONG])]) as server:
        last = verify_run(server, repair_rounds=2)[-1]
        assert len(server.requests) == 3
    assert not last.report.passed
    assert last.status == "Done. Verify: outputs differ (0/2 input cases) after 2 repair rounds."


def test_verify_refuses_pairs_without_a_runtime_before_calling_the_model():
    with ScriptedChatServer([Reply(["fn main() {}"])]) as server:
        backend = ServerBackend(ServerSettings(base_url=server.url, model="test-model"))
        (last,) = list(translate(TranslationJob("Python", "Rust", PYTHON_SOURCE, verify_inputs=""), backend))
        assert server.requests == []
    assert isinstance(last.error, VerifyUnavailable)
    assert "Cannot verify Python → Rust here: running Rust is not supported" in last.status


def test_running_code_is_refused_on_an_exposed_server():
    assert run_allowed(parse_args([], environ={})) == (True, "")
    ok, reason = run_allowed(parse_args(["--listen"], environ={}))
    assert not ok and "--listen" in reason and "--enable-insecure-extension-access" in reason
    assert run_allowed(parse_args(["--listen", "--enable-insecure-extension-access"], environ={}))[0]


def test_runner_limits_time_output_and_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    leaked = run_program("Python", "import os\nprint(os.environ.get('OPENAI_API_KEY'))\n")
    assert leaked.stdout == "None\n" and leaked.returncode == 0
    slow = run_program("Python", "while True:\n    pass\n", timeout_s=1)
    assert slow.timed_out and slow.summary() == "timed out"
    flood = run_program("Bash", "yes 0123456789", timeout_s=5)
    assert flood.truncated and len(flood.stdout) == OUTPUT_CAP and not flood.timed_out
    assert split_inputs("") == [""] and split_inputs("1\n---\n2") == ["1\n", "2\n"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="C verify needs gcc")
def test_c_programs_are_compiled_and_compile_errors_reported():
    ok = run_program("C", '#include <stdio.h>\nint main(void) { int n; scanf("%d", &n); printf("%d\\n", n * 3); }\n',
                     "7\n")
    assert ok.stdout == "21\n" and ok.returncode == 0
    broken = run_program("C", "int main(void) { return nope; }\n")
    assert broken.failed_to_build and "nope" in broken.stderr and broken.summary() == "did not compile"
