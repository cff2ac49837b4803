"""A1111's small Gradio building blocks (``modules.ui_components``), by the names extension authors import.

Each is a thin subclass of a Gradio component or layout. Gradio picks the browser widget from the class name and
sends the properties named in the class's ``__init__`` signature, so every subclass reports the name of the Gradio
class it extends and an ``__init__`` of its own carries that class's signature (both via :class:`_GradioName`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio import component_meta


@contextlib.contextmanager
def _no_stub_files() -> Iterator[None]:
    """Gradio's component metaclass writes a ``.pyi`` copy of any module that subclasses a component (a tool for
    authors of custom components); without this the install would get a stale ``modules/ui_components.pyi``."""
    original = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = original


def _gradio_base(cls: type) -> type:
    for base in cls.__mro__:
        if base.__module__.startswith("gradio."):
            return base
    return cls


def _gradio_signature(cls: type) -> type:
    """Give the class's own ``__init__`` the Gradio base's signature, which Gradio reads to build the config."""
    init = cls.__dict__.get("__init__")
    if init is not None:
        init.__signature__ = inspect.signature(_gradio_base(cls).__init__)
    return cls


class _GradioName:
    """Report the nearest Gradio class as the block name, so the frontend renders e.g. a ``FormRow`` as a row;
    subclasses (extensions' too) that define ``__init__`` get the Gradio signature."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _gradio_signature(cls)

    def get_block_name(self) -> str:
        return _gradio_base(type(self)).__name__.lower()

    def get_block_class(self) -> str:
        return self.get_block_name()


with _no_stub_files():  # the classes extensions import
    class FormRow(_GradioName, gr.Row):
        """A row of form fields (A1111 gives it the ``form`` look)."""

    class FormColumn(_GradioName, gr.Column):
        """A column of form fields."""

    class FormGroup(_GradioName, gr.Group):
        """Fields drawn as one group without gaps."""

    class FormHTML(_GradioName, gr.HTML):
        """HTML that sits inside a form row."""

    class ToolButton(_GradioName, gr.Button):
        """A small square button holding an emoji, placed next to a field (refresh, dice, recycle, paste)."""

        def __init__(self, value: str = "", *args: Any, elem_classes: list[str] | None = None,
                     tooltip: str | None = None, **kwargs: Any) -> None:
            classes = ["tool", *(elem_classes or [])]
            self.tooltip = tooltip  # shown as the button's title by javascript/ui.js
            kwargs.setdefault("variant", "secondary")
            kwargs.setdefault("min_width", 40)
            kwargs.setdefault("scale", 0)
            super().__init__(value, *args, elem_classes=classes, **kwargs)

    class DropdownMulti(_GradioName, gr.Dropdown):
        """A dropdown that takes several values (A1111's styles picker)."""

        def __init__(self, **kwargs: Any) -> None:
            kwargs["multiselect"] = True
            super().__init__(**kwargs)

    class DropdownEditable(_GradioName, gr.Dropdown):
        """A dropdown that also accepts typed values not in its choices."""

        def __init__(self, **kwargs: Any) -> None:
            kwargs["allow_custom_value"] = True
            super().__init__(**kwargs)

    class InputAccordion(_GradioName, gr.Checkbox):
        """An accordion whose value is whether it is open (A1111's hires fix / refiner sections).

        Use it as a context manager; its contents go into the accordion, and the component itself (a hidden checkbox)
        is the boolean input that handlers receive::

            with InputAccordion(False, label="Hires. fix", elem_id="txt2img_hr") as enable_hr:
                ...

        Opening or closing the accordion sets the value in the browser; setting the value (e.g. pasting parameters)
        opens or closes the accordion.
        """

        def __init__(self, value: bool = False, *, label: str = "", elem_id: str | None = None, **kwargs: Any) -> None:
            kwargs.pop("visible", None)
            classes = ["input-accordion-checkbox", *(kwargs.pop("elem_classes", None) or [])]
            super().__init__(value=value, label=label, elem_id=f"{elem_id}-checkbox" if elem_id else None,
                             elem_classes=classes, visible=False, **kwargs)
            self.accordion_id = elem_id
            self.accordion = gr.Accordion(label, open=bool(value), elem_id=elem_id, elem_classes=["input-accordion"])
            self.accordion.expand(fn=None, js="() => true", outputs=[self], show_progress="hidden", queue=False)
            self.accordion.collapse(fn=None, js="() => false", outputs=[self], show_progress="hidden", queue=False)
            self.change(fn=lambda opened: gr.Accordion(open=bool(opened)), inputs=[self], outputs=[self.accordion],
                        show_progress="hidden", queue=False)

        def __enter__(self) -> InputAccordion:
            self.accordion.__enter__()
            return self

        def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
            self.accordion.__exit__(exc_type, exc_val, exc_tb)
