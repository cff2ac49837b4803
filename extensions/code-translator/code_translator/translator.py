"""One translation from start to finish, as a stream of :class:`Update` s that the tab, the HTTP route and the
command line all consume: check the request, split a long input, translate chunk by chunk in dependency order,
reassemble, then optionally verify by running and ask the model for repairs.

Failures do not raise: the last update carries the error and keeps whatever output had arrived.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from code_translator.assembly import Assembly
from code_translator.chunking import Chunk, TokenCounter, estimate_tokens, plan_chunks
from code_translator.errors import (
    InvalidTranslationRequest,
    StreamInterrupted,
    TranslationError,
    VerifyUnavailable,
    describe,
)
from code_translator.fences import FenceStripper, extract_code
from code_translator.languages import LANGUAGES, canonical_language
from code_translator.ordering import context_for, translation_order
from code_translator.prompts import ChunkContext, build_messages, repair_messages, request_kind
from code_translator.verify import VerifyReport, split_inputs, unavailable_reason, verify

log = logging.getLogger(__name__)

MIN_CHUNK_TOKENS = 64
MAX_REPAIR_ROUNDS = 5


class ChatBackend(Protocol):
    finish_reason: str | None

    def describe(self) -> str: ...

    def stream(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]: ...


@dataclass
class TranslationJob:
    input_language: str
    output_language: str
    code: str
    chunk_tokens: int = 1500
    verify_inputs: str | None = None  # None: no verify; text with cases separated by "---" lines otherwise
    repair_rounds: int = 0
    run_timeout_s: float = 10.0


@dataclass
class Update:
    output: str  # the whole translation so far, in source order
    status: str
    delta: str = ""  # new stream text: the deltas of one translation pass concatenate to its output
    error: TranslationError | None = None
    report: VerifyReport | None = None
    restarted: bool = False  # a repair round began: ``output`` starts over
    done: bool = False


def validate(job: TranslationJob) -> TranslationJob:
    """The job with canonical language names, or :class:`InvalidTranslationRequest` saying what is wrong."""
    source, target = canonical_language(job.input_language), canonical_language(job.output_language)
    for given, found, side in ((job.input_language, source, "input"), (job.output_language, target, "output")):
        if found is None:
            raise InvalidTranslationRequest(f"Unknown {side} language '{given}'.",
                                            f"Pick one of: {', '.join(LANGUAGES)}.")
    if source == target:
        raise InvalidTranslationRequest(f"The input and output languages are both {source}.",
                                        "Pick a different output language.")
    if not job.code.strip():
        raise InvalidTranslationRequest("There is no input to translate.", "Paste code or upload a file.")
    if job.chunk_tokens < MIN_CHUNK_TOKENS:
        raise InvalidTranslationRequest(f"A chunk size of {job.chunk_tokens} tokens is too small.",
                                        f"Use at least {MIN_CHUNK_TOKENS}.")
    if not 0 <= job.repair_rounds <= MAX_REPAIR_ROUNDS:
        raise InvalidTranslationRequest(f"Repair rounds must be between 0 and {MAX_REPAIR_ROUNDS}.")
    assert source is not None and target is not None
    if job.verify_inputs is not None:
        reason = unavailable_reason(source, target)
        if reason:
            raise VerifyUnavailable(f"Cannot verify {source} → {target} here: {reason}.",
                                    "Verify runs Python, JavaScript (node), Bash, C and C++ (gcc/g++).")
    return replace(job, input_language=source, output_language=target)


def chunks_for(job: TranslationJob, count: TokenCounter = estimate_tokens) -> list[Chunk]:
    """The chunks to translate: the whole input when it fits (or is a description), else the planned split."""
    if request_kind(job.input_language, job.output_language) == "describe" or count(job.code) <= job.chunk_tokens:
        return [Chunk(0, job.code, count(job.code))]
    return plan_chunks(job.code, job.input_language, job.chunk_tokens, count)


def _backend_failure(exc: Exception) -> TranslationError:
    log.exception("Code translator backend failed")
    return StreamInterrupted(f"The backend failed: {type(exc).__name__}: {exc}.", "See the server log.")


def _line_ranges(chunks: list[Chunk]) -> list[tuple[int, int]]:
    ranges, line = [], 1
    for chunk in chunks:
        lines = max(1, chunk.text.count("\n") + (0 if chunk.text.endswith("\n") else 1))
        ranges.append((line, line + lines - 1))
        line += lines
    return ranges


def translate(job: TranslationJob, backend: ChatBackend, cancel: threading.Event | None = None) -> Iterator[Update]:
    """Run ``job`` on ``backend``; the last update has ``done=True``."""
    try:
        job = validate(job)
    except TranslationError as exc:
        yield Update("", describe(exc), error=exc, done=True)
        return
    cancel = cancel or threading.Event()
    chunks = chunks_for(job)
    assembly = Assembly(len(chunks))
    warnings: list[str] = []
    ranges = _line_ranges(chunks)
    translated: dict[int, str] = {}
    for step, index in enumerate(translation_order(chunks), 1):
        chunk = chunks[index]
        context = None
        if len(chunks) > 1:
            context = ChunkContext(index + 1, len(chunks), context_for(chunk, translated, job.chunk_tokens * 2),
                                   chunk.continues_previous)
            first, last = ranges[index]
            status = f"Chunk {step}/{len(chunks)}: lines {first}-{last} of the input ({backend.describe()})…"
        else:
            status = f"Translating with {backend.describe()}…"
        messages = build_messages(job.input_language, job.output_language, chunk.text, context)
        text = ""
        error: TranslationError | None = None
        stripper = FenceStripper()
        assembly.set(index, text)
        yield Update(assembly.output(), status, assembly.take())
        try:
            for piece in backend.stream(messages, cancel):
                shown = stripper.feed(piece)
                if shown:
                    text += shown
                    assembly.set(index, text)
                    yield Update(assembly.output(), status, assembly.take())
        except TranslationError as exc:
            error = exc
        except Exception as exc:  # a backend bug must not lose the output or escape as a bare 500
            error = _backend_failure(exc)
        text += stripper.finish()
        assembly.set(index, text, finished=error is None)
        if error is not None:
            where = f" (chunk {step} of {len(chunks)})" if len(chunks) > 1 else ""
            yield Update(assembly.output(), f"{describe(error)}{where}", assembly.take(), error=error, done=True)
            return
        if cancel.is_set():
            yield Update(assembly.output(), "Stopped; the output so far is kept.", assembly.take(), done=True)
            return
        translated[index] = text
        if backend.finish_reason == "length":
            warnings.append(f"chunk {index + 1} stopped at the max-tokens limit" if len(chunks) > 1
                            else "the reply stopped at the max-tokens limit; raise Max tokens")
    output = assembly.output()
    note = f" Warning: {'; '.join(warnings)}." if warnings else ""
    parts = f" in {len(chunks)} chunks" if len(chunks) > 1 else ""
    if job.verify_inputs is None:
        yield Update(output, f"Done{parts}.{note}", assembly.take(), done=True)
        return
    yield Update(output, f"Translated{parts}; running both programs…{note}", assembly.take())
    yield from _verify_and_repair(job, backend, cancel, output)


def _verify_and_repair(job: TranslationJob, backend: ChatBackend, cancel: threading.Event,
                       output: str) -> Iterator[Update]:
    inputs = split_inputs(job.verify_inputs or "")
    source_runs: dict = {}
    program = extract_code(output)
    report = verify(job.input_language, job.code, job.output_language, program, inputs, job.run_timeout_s,
                    source_runs)
    rounds_used = 0
    for round_number in range(1, job.repair_rounds + 1):
        if report.passed or cancel.is_set():
            break
        rounds_used = round_number
        yield Update(output, f"{report.summary()} Repair round {round_number}/{job.repair_rounds}…", report=report)
        messages = repair_messages(build_messages(job.input_language, job.output_language, job.code), program,
                                   job.output_language, report.failure_report())
        stripper, text = FenceStripper(), ""
        yield Update("", f"Repair round {round_number}/{job.repair_rounds}: asking {backend.describe()}…",
                     report=report, restarted=True)
        try:
            for piece in backend.stream(messages, cancel):
                text += stripper.feed(piece)
                yield Update(text, f"Repair round {round_number}/{job.repair_rounds}…", report=report)
        except Exception as exc:
            failure = exc if isinstance(exc, TranslationError) else _backend_failure(exc)
            status = f"Repair round {round_number} broke off: {describe(failure)} The last complete translation " \
                     "is shown."
            yield Update(output, status, error=failure, report=report, restarted=True, done=True)
            return
        if cancel.is_set():
            yield Update(output, "Stopped; the last complete translation is shown.", report=report, restarted=True,
                         done=True)
            return
        output = text + stripper.finish()
        program = extract_code(output)
        report = verify(job.input_language, job.code, job.output_language, program, inputs, job.run_timeout_s,
                        source_runs)
    after = f" after {rounds_used} repair round{'s' if rounds_used > 1 else ''}" if rounds_used else ""
    yield Update(output, f"Done. {report.summary()[:-1]}{after}.", report=report, done=True)
