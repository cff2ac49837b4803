"""Chat messages for the three kinds of request: description -> code, code -> explanation, code -> code.

Each request is a system message (who the model is and what to do) and a user message (one worked example, the
user's text, and a final cue line the model continues from). Chat servers apply their own template to these
messages, which suits instruction-tuned local models better than one big system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from code_translator.languages import NATURAL_LANGUAGE

IDENTITY = "You are an expert programmer who is fluent in every programming language."

EXAMPLE_TASK = "Add up the numbers from 1 to 10 and print the total."
EXAMPLE_JAVASCRIPT = "let total = 0;\nfor (let i = 1; i <= 10; i++) {\n  total += i;\n}\nconsole.log(total);"
EXAMPLE_PYTHON = "total = 0\nfor i in range(1, 11):\n    total += i\nprint(total)"
EXAMPLE_EXPLANATION = "- Start a running total at 0.\n- Add each whole number from 1 to 10 to the total.\n" \
                      "- Print the total."

NO_FENCES = "Reply with the code only: no ``` fences, no commentary before or after it."


@dataclass(frozen=True)
class ChunkContext:
    """What a chunk of a long file needs to know: where it sits and what is already translated."""

    index: int  # 1-based, in source order
    count: int
    translated_signatures: str = ""  # signatures in the output language of parts already translated
    continues_previous: bool = False  # a long definition split into parts: this part goes on from the last


def request_kind(input_language: str, output_language: str) -> str:
    """"describe" (natural language -> code), "explain" (code -> bullet points) or "translate" (code -> code)."""
    if input_language == NATURAL_LANGUAGE:
        return "describe"
    if output_language == NATURAL_LANGUAGE:
        return "explain"
    return "translate"


def task_sentence(input_language: str, output_language: str) -> str:
    kind = request_kind(input_language, output_language)
    if kind == "describe":
        return f'Write "{output_language}" code that does what the natural-language description asks. {NO_FENCES}'
    if kind == "explain":
        return (f'Explain what the "{input_language}" code does in plain English that an average adult can follow. '
                'Answer as bullet points, each line starting with "-".')
    return f'Translate the "{input_language}" code into "{output_language}" code that behaves the same. {NO_FENCES}'


def worked_example(input_language: str, output_language: str) -> str:
    kind = request_kind(input_language, output_language)
    if kind == "describe":
        return f"Example, from natural language to JavaScript:\nNatural language:\n{EXAMPLE_TASK}\n" \
               f"JavaScript code:\n{EXAMPLE_JAVASCRIPT}"
    if kind == "explain":
        return f"Example, from JavaScript to natural language:\nJavaScript code:\n{EXAMPLE_JAVASCRIPT}\n" \
               f"Natural language:\n{EXAMPLE_EXPLANATION}"
    return f"Example, from JavaScript to Python:\nJavaScript code:\n{EXAMPLE_JAVASCRIPT}\n" \
           f"Python code:\n{EXAMPLE_PYTHON}"


def input_label(input_language: str) -> str:
    return "Natural language:" if input_language == NATURAL_LANGUAGE else f"{input_language} code:"


def output_cue(input_language: str, output_language: str) -> str:
    if output_language == NATURAL_LANGUAGE:
        return "Natural language:"
    return f"{output_language} code (no ```):"


def chunk_note(chunk: ChunkContext, input_language: str, output_language: str) -> str:
    lines = [f"The input is part {chunk.index} of {chunk.count} of a longer {input_language} file; "
             "handle only this part."]
    if chunk.continues_previous:
        lines.append("It continues the definition that the previous part started; go on from there.")
    if chunk.translated_signatures and output_language != NATURAL_LANGUAGE:
        lines.append(f"These parts are already translated to {output_language}; use them as they are and do not "
                     f"write them again:\n{chunk.translated_signatures}")
    return "\n".join(lines)


def build_messages(input_language: str, output_language: str, code: str,
                   chunk: ChunkContext | None = None) -> list[dict[str, str]]:
    """The chat messages for one request (one chunk of a long file when ``chunk`` is given)."""
    system = f"{IDENTITY}\n{task_sentence(input_language, output_language)}"
    parts = [worked_example(input_language, output_language)]
    if chunk is not None:
        parts.append(chunk_note(chunk, input_language, output_language))
    parts.append(f"Now yours.\n{input_label(input_language)}\n{code}")
    parts.append(output_cue(input_language, output_language))
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def repair_messages(messages: list[dict[str, str]], translation: str, output_language: str,
                    failure_report: str) -> list[dict[str, str]]:
    """Ask for a corrected translation: the first exchange, then what running both programs showed."""
    request = (f"Running both programs on the same input showed a difference:\n{failure_report}\n\n"
               f"Fix the {output_language} code so that it prints exactly what the original prints. Reply with the "
               f"complete corrected program only, no ``` fences.\n\n{output_cue('', output_language)}")
    return [*messages, {"role": "assistant", "content": translation}, {"role": "user", "content": request}]
