"""Verify a translation by running it: the source and the translation get the same inputs on stdin, and their
outputs must match (trailing whitespace aside) along with their exit codes. A mismatch becomes a report that is
shown to the user and, for repair rounds, sent back to the model.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from code_translator.runtimes import RunResult, run_program, runtime_missing

CASE_SEPARATOR = re.compile(r"^-{3,}\s*$", re.MULTILINE)


def split_inputs(text: str) -> list[str]:
    """Input cases from one text: separated by lines of "---"; no text at all is one case with empty stdin."""
    if not text.strip():
        return [""]
    return [case.strip("\n") + "\n" for case in CASE_SEPARATOR.split(text) if case.strip()]


def unavailable_reason(input_language: str, output_language: str) -> str | None:
    """Why the pair cannot be verified on this machine, or None when both sides can run."""
    reasons = [r for r in (runtime_missing(input_language), runtime_missing(output_language)) if r]
    return "; ".join(dict.fromkeys(reasons)) or None


def _normalise(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip().splitlines()]


@dataclass
class CaseResult:
    stdin: str
    source: RunResult
    translation: RunResult

    @property
    def passed(self) -> bool:
        if self.source.timed_out or self.translation.failed_to_build or self.translation.timed_out:
            return False
        return (_normalise(self.source.stdout) == _normalise(self.translation.stdout)
                and self.source.returncode == self.translation.returncode)

    def diff(self) -> str:
        lines = difflib.unified_diff(_normalise(self.source.stdout), _normalise(self.translation.stdout),
                                     "source output", "translation output", lineterm="")
        text = "\n".join(lines)
        if self.source.returncode != self.translation.returncode:
            text += f"\nexit codes differ: source {self.source.summary()}, translation {self.translation.summary()}"
        return text.strip()


@dataclass
class VerifyReport:
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(case.passed for case in self.cases)

    def first_failure(self) -> CaseResult | None:
        return next((case for case in self.cases if not case.passed), None)

    def source_output(self) -> str:
        return _joined(self.cases, lambda case: case.source)

    def translation_output(self) -> str:
        return _joined(self.cases, lambda case: case.translation)

    def diff(self) -> str:
        parts = [f"case {n}:\n{case.diff()}" if len(self.cases) > 1 else case.diff()
                 for n, case in enumerate(self.cases, 1) if not case.passed]
        return "\n\n".join(parts)

    def summary(self) -> str:
        good = sum(case.passed for case in self.cases)
        verdict = "outputs match" if self.passed else "outputs differ"
        return f"Verify: {verdict} ({good}/{len(self.cases)} input cases)."

    def failure_report(self) -> str:
        """What the model needs to fix its translation: the input, both outputs, the diff and the errors."""
        case = self.first_failure()
        if case is None:
            return ""
        parts = [f"Input (stdin):\n{case.stdin or '(none)'}", f"Original program output:\n{case.source.stdout}",
                 f"Translated program output:\n{case.translation.stdout}", f"Difference:\n{case.diff()}"]
        if case.translation.stderr.strip():
            what = "Compiler errors" if case.translation.failed_to_build else "Translated program errors"
            parts.append(f"{what}:\n{case.translation.stderr.strip()[-2000:]}")
        return "\n\n".join(parts)


def _joined(cases: list[CaseResult], side) -> str:
    blocks = []
    for n, case in enumerate(cases, 1):
        result: RunResult = side(case)
        text = result.stdout
        if result.stderr.strip():
            text += f"\n[stderr]\n{result.stderr.rstrip()}"
        text += f"\n[{result.summary()}]"
        blocks.append(f"# case {n}\n{text}" if len(cases) > 1 else text)
    return "\n\n".join(blocks)


def verify(input_language: str, source: str, output_language: str, translation: str, inputs: list[str],
           timeout_s: float = 10.0, source_runs: dict[str, RunResult] | None = None) -> VerifyReport:
    """Run both programs on every input case. The caller checks :func:`unavailable_reason` first.

    ``source_runs`` caches the source program's results by input across repair rounds."""
    cache = {} if source_runs is None else source_runs
    report = VerifyReport()
    for stdin in inputs:
        if stdin not in cache:
            cache[stdin] = run_program(input_language, source, stdin, timeout_s)
        report.cases.append(CaseResult(stdin, cache[stdin], run_program(output_language, translation, stdin,
                                                                       timeout_s)))
    return report
