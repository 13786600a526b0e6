"""What one render of a prompt template may still do, and the measures it is held to: ``RenderBudget`` (steps,
characters per value, characters read and built in all), the per-thread budget of the render under way
(``rendering`` / ``current_budget``), ``size_of`` (about the characters a value's text takes, counted without
building it) and ``BoundedRange`` (the templates' ``range``). ``sandbox.py`` guards every operation with them.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace

from synth.core.limits import limit, over_limit

# Characters one render may read and build in all (every intermediate value), as a multiple of
# max_prompt_chars: the shipped prompts use about 3x their output; this stops loops that build and drop text.
WORK_FACTOR = 10

_state = threading.local()


class TemplateRefused(SecurityError):
    """A template tried something the sandbox refuses; the message is the whole line for the user."""


class RenderBudget:
    """What one render may still do; ``where`` (the prompt file) starts every refusal."""

    def __init__(self, where: str):
        self.where = where
        self.max_chars = limit("max_prompt_chars")
        self.max_range = limit("max_template_range")
        self.max_steps = limit("max_template_steps")
        self.max_work = self.max_chars * WORK_FACTOR
        self.steps = self.work = 0

    def refuse(self, reason: str) -> TemplateRefused:
        return TemplateRefused(f"{self.where}: {reason}")

    def over(self, name: str, got: str) -> TemplateRefused:
        return TemplateRefused(str(over_limit(name, self.where, got)))

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise self.refuse(
                f"the template takes more than {self.max_steps:,} steps (loop iterations, range items, calls) "
                "in one render; refused as a loop or recursion bomb"
            )

    def expect(self, chars: int, what: str) -> None:
        """Refuse before building ``what`` when it would hold more than ``max_prompt_chars`` characters."""
        if chars > self.max_chars:
            raise self.over("max_prompt_chars", f"{what} of {chars:,} characters")

    def numbers(self, values) -> None:
        """Widths and counts passed to methods and filters: none may exceed a prompt's size."""
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > self.max_chars:
                raise self.over("max_prompt_chars", f"a number argument of {v:,}")

    def charge(self, value: Any, what: str = "a value") -> Any:
        """Count ``value`` (read or built) against this render's work; a value over a prompt's size is refused."""
        size = size_of(value, self.max_chars + 1)
        self.expect(size, what)
        self.work += size
        if self.work > self.max_work:
            raise self.refuse(
                f"the template reads and builds more than {self.max_work:,} characters in one render "
                f"({WORK_FACTOR}x max_prompt_chars); refused as a size bomb"
            )
        return value


def current_budget() -> RenderBudget:
    budget = getattr(_state, "budget", None)
    if budget is None:  # compile-time constant folding: guarded operations are never folded
        raise RuntimeError("a prompt template renders only inside sandbox_budget.rendering()")
    return budget


@contextmanager
def rendering(where: str) -> Iterator[None]:
    """A fresh budget for one render of the prompt file ``where`` (per thread)."""
    previous, _state.budget = getattr(_state, "budget", None), RenderBudget(where)
    try:
        yield
    finally:
        _state.budget = previous


def size_of(value: Any, cap: int) -> int:
    """About the characters ``str(value)`` takes (nested containers included), counted up to ``cap``."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    total, stack = 0, [value]
    while stack and total <= cap:
        v = stack.pop()
        if isinstance(v, (str, bytes, bytearray)):
            total += len(v) + 2  # quotes and separator inside a container
        elif isinstance(v, bool) or v is None:
            total += 4
        elif isinstance(v, int):
            total += v.bit_length() * 30103 // 100000 + 2  # decimal digits
        elif isinstance(v, (list, tuple, set, frozenset, dict, range, BoundedRange)):
            total += 2
            if len(v) > cap:
                total += len(v)
            elif isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif not isinstance(v, (range, BoundedRange)):
                stack.extend(v)
            else:
                total += len(v) * 3
        elif isinstance(v, Namespace):
            stack.append(dict(object.__getattribute__(v, "_Namespace__attrs")))
        else:
            total += 8
    return total


class BoundedRange:
    """``range`` for templates: at most ``max_template_range`` items, each one a step."""

    def __init__(self, *args: int):
        budget = current_budget()
        self._range = range(*args)
        try:
            got = f"a range of {len(self._range):,} items" if len(self._range) > budget.max_range else ""
        except OverflowError:  # more items than an index can count
            got = "a range of more than 2**63 items"
        if got:
            raise budget.over("max_template_range", got)

    def __iter__(self) -> Iterator[int]:
        budget = current_budget()
        for i in self._range:
            budget.step()
            yield i

    def __reversed__(self) -> Iterator[int]:
        budget = current_budget()
        for i in reversed(self._range):
            budget.step()
            yield i

    def __len__(self) -> int:
        return len(self._range)

    def __contains__(self, item: object) -> bool:
        return item in self._range

    def __getitem__(self, index):
        item = self._range[index]
        if isinstance(item, range):
            bounded = object.__new__(BoundedRange)
            bounded._range = item
            return bounded
        return item

    def __repr__(self) -> str:
        return repr(self._range)
