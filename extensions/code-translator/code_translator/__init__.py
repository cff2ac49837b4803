"""Code translator: an Atelier extension that translates code between languages with an LLM (an OpenAI-compatible
server or a local transformers model), splits long files, and can verify a translation by running it.

The modules each do one job: ``prompts`` (messages), ``server_backend`` / ``local_backend`` (streaming), ``chunking``
and ``ordering`` (long files), ``translator`` (the whole run), ``verify`` / ``runtimes`` (running programs), and
the faces ``ui``, ``api`` and ``cli``.
"""
