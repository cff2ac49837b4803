"""``before_component`` / ``after_component`` for extensions, as A1111 fires them: around the creation of every Gradio
component while the UI is built, with the component and its keyword arguments (``elem_id``, ``label``...).

Gradio has no hook for this, so while :func:`component_hooks` is active the base ``Component.__init__`` is wrapped
(and restored afterwards). The receivers are ``script_callbacks``' ``on_before_component``/``on_after_component``
callbacks and the scripts of the tab being built (``modules.scripts.scripts_current``: their ``before_component``,
``after_component`` and targeted ``on_before_component(elem_id=...)`` callbacks).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.RLock()


def _fire(when: str, component: Any, kwargs: dict[str, Any]) -> None:
    from modules import script_callbacks, scripts

    if when == "before":
        script_callbacks.before_component_callback(component, **kwargs)
    runner = scripts.scripts_current
    if runner is not None:
        try:
            getattr(runner, f"{when}_component")(component, **kwargs)
        except Exception:
            log.exception("Error in the scripts' %s_component hooks", when)
    if when == "after":
        script_callbacks.after_component_callback(component, **kwargs)


@contextmanager
def component_hooks() -> Iterator[None]:
    """While active, every Gradio component created fires the before/after component hooks."""
    from gradio.components.base import Component

    with _lock:
        original = Component.__init__

        @functools.wraps(original)
        def hooked(self: Any, *args: Any, **kwargs: Any) -> None:
            _fire("before", self, kwargs)
            original(self, *args, **kwargs)
            _fire("after", self, kwargs)

        Component.__init__ = hooked
        try:
            yield
        finally:
            Component.__init__ = original
