"""The sandbox prompt templates render in.

Recipes and prompt folders are shared like code, so a template is untrusted: rendering one (also in
``--dry-run`` and ``synth.plan()``) must run no code, read no file and end soon with bounded memory.
``PromptEnvironment`` is Jinja2's ``ImmutableSandboxedEnvironment`` (no ``_``-attributes, no mutation,
sandboxed ``str.format``) plus:

- no ``include``/``import``/``extends`` (a prompt is one file) and no ``lipsum``; ``range`` is bounded
  (``max_template_range``);
- calls are limited to macros, the loop helpers and a list of string/dict methods whose result grows
  at most linearly with their inputs (``str.translate`` with a crafted table, for one, does not);
- every step (loop iteration, ``range`` item, call, filter) counts against the ``max_template_steps`` limit
  (SYNTH_MAX_TEMPLATE_STEPS), so nested loops and recursive macros stop;
- every operator, call, filter, ``~`` and captured block checks sizes *before* building anything that
  could outgrow ``max_prompt_chars`` (``'x' * 10**10``, ``'{:>999999999}'.format(1)``), and the text a
  render reads and builds in all is bounded (``WORK_FACTOR``), so no loop can fill memory; the budget
  these count against, and the size measure, are ``synth.llm.sandbox_budget``.

Crossing any of these raises ``TemplateRefused``, whose message is the one line the user sees.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Any

from jinja2 import Environment, StrictUndefined, nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import BlockReference, Context, LoopContext, Macro, Undefined, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace

from synth.llm.sandbox_budget import BoundedRange, RenderBudget, current_budget, size_of

# A name no prompt uses: the loop step inserted at the top of every loop body (see _GuardedCodeGenerator).
STEP = "__synth_step__"

_STR_METHODS = frozenset(
    "capitalize casefold center count encode endswith find format format_map index isalnum isalpha isascii "
    "isdecimal isdigit isidentifier islower isnumeric isprintable isspace istitle isupper join ljust lower "
    "lstrip partition removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip split "
    "splitlines startswith strip swapcase title upper zfill expandtabs escape unescape striptags".split()
)
# the filters and methods that take a width or count: a number over max_prompt_chars there is refused
_WIDTH_FILTERS = frozenset({"center", "indent", "truncate", "wordwrap", "batch", "slice"})
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_CONTAINER_METHODS = {dict: frozenset({"get", "items", "keys", "values"}), list: frozenset({"count", "index"})}
_CONTAINER_METHODS[tuple] = _CONTAINER_METHODS[list]
_SAFE_CALLABLES = (Macro, BlockReference, LoopContext, Cycler, Joiner)
# printf-style specs (`%-10.3f`, `%*d`) and their widths, for `str % args` and the `format` filter
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_DIGITS = re.compile(r"\d+")


def _step() -> bool:
    return True  # the counting happens in PromptEnvironment.call


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``: its text must fit in a prompt before ``str()`` builds it."""
    if not isinstance(value, str):
        budget = current_budget()
        budget.expect(size_of(value, budget.max_chars + 1), "an output value")
    return value


def _format_widths(fmt: str, args: tuple, kwargs: dict) -> int:
    """The padding a ``str.format`` call may add: its literal widths and precisions, and any nested ones."""
    total, nested = 0, False
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # str.format raises the same error itself
    for _, _, spec, _ in fields:
        if spec:
            total += sum(int(d) for d in _DIGITS.findall(spec))
            nested = nested or "{" in spec
    if nested:
        total += sum(v for v in (*args, *kwargs.values()) if isinstance(v, int) and not isinstance(v, bool))
    return total


def _percent_widths(fmt: str, args: Any) -> int:
    """The padding ``fmt % args`` may add: the widths and precisions of its specs (and ``*`` ones)."""
    total, star = 0, False
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group == "*":
                star = True
            elif group:
                total += int(group)
    if star:
        values = args if isinstance(args, tuple) else (args,)
        total += sum(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return total


def _check_str_method(budget: RenderBudget, name: str, text: str, args: tuple, kwargs: dict) -> tuple:
    """Pre-checks for the string methods whose result can outgrow their inputs; returns the args to call with."""
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        count = text.count(old) if old else len(text) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        budget.expect(len(text) + count * max(len(new) - len(old), 0), "a replace() result")
    elif name == "join" and args:
        items = list(args[0])
        budget.expect(sum(size_of(i, budget.max_chars + 1) for i in items) + len(text) * len(items), "a join() result")
        args = (items, *args[1:])
    elif name == "expandtabs":
        width = (args or (kwargs.get("tabsize", 8),))[0]
        if isinstance(width, int):
            budget.expect(len(text) + text.count("\t") * width, "an expandtabs() result")
    return args


def _check_filter(budget: RenderBudget, name: str, values: list, kwargs: dict) -> None:
    """Pre-checks for the built-in filters whose result can outgrow their inputs."""
    value, rest = (values[0], values[1:]) if values else (None, [])
    text_size = size_of(value, budget.max_chars + 1)
    if name == "replace" and isinstance(value, str) and len(rest) >= 2:
        old, new = str(rest[0]), str(rest[1])
        count = value.count(old) if old else len(value) + 1
        budget.expect(len(value) + count * max(len(new) - len(old), 0), "a |replace result")
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        lines = value.count("\n") + 1 if isinstance(value, str) else text_size
        budget.expect(text_size + lines * pad, "an |indent result")
    elif name == "wordwrap":
        width = rest[0] if rest else kwargs.get("width", 79)
        wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring")
        # two neighbouring lines hold more than `width` characters, so there are at most 2 * len / width lines
        breaks = 2 * text_size // max(width if isinstance(width, int) else 1, 1) + 2
        breaks += value.count("\n") if isinstance(value, str) else 0
        budget.expect(text_size + breaks * len(wrap or "\n"), "a |wordwrap result")
    elif name == "format" and isinstance(value, str):
        budget.expect(
            len(value) + _percent_widths(value, tuple(rest)) + size_of(rest, budget.max_chars + 1), "a |format"
        )


def _guard_filter(name: str, func):
    @functools.wraps(func)  # keeps jinja's pass_context/pass_eval_context marker
    def guarded(*args, **kwargs):
        budget = current_budget()
        budget.step()
        values = [a for a in args if not isinstance(a, (Context, nodes.EvalContext, Environment))]
        if name in _WIDTH_FILTERS:
            budget.numbers((*values[1:], *kwargs.values()))
        for v in (*values, *kwargs.values()):
            budget.charge(v, f"an input of |{name}")
        if name == "join" and values and not isinstance(values[0], (str, list, tuple, dict)):
            items = list(values[0])  # a generator (map, select): count what it yields before joining
            args = tuple(items if a is values[0] else a for a in args)
            values[0] = items
            budget.charge(items, f"an input of |{name}")
        if name == "join" and values:
            sep = values[1] if len(values) > 1 else kwargs.get("d", "")
            budget.expect(size_of(values[0], budget.max_chars + 1) + len(str(sep)) * len(values[0]), "a |join result")
        _check_filter(budget, name, values, kwargs)
        return budget.charge(func(*args, **kwargs), f"the result of |{name}")

    return guarded


class _GuardedCodeGenerator(CodeGenerator):
    """Refuses ``include``/``import``/``extends``, counts every loop iteration, and checks ``~``."""

    _REFUSED = {nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from"}

    def visit_Template(self, node: nodes.Template, frame=None) -> None:
        for bad in node.find_all(tuple(self._REFUSED)):
            self.fail(
                f"{{% {self._REFUSED[type(bad)]} %}} is not allowed in a prompt template (a prompt is one file)",
                bad.lineno,
            )
        for loop in node.find_all(nodes.For):
            loop.body.insert(0, nodes.ExprStmt(self._step_call(loop.lineno), lineno=loop.lineno))
            if loop.test is not None:  # `for x in xs if test`: filtered-out items are steps too
                loop.test = nodes.And(self._step_call(loop.lineno), loop.test, lineno=loop.lineno)
        super().visit_Template(node, frame)

    @staticmethod
    def _step_call(lineno: int) -> nodes.Call:
        return nodes.Call(nodes.Name(STEP, "load", lineno=lineno), [], [], None, None, lineno=lineno)

    def visit_Concat(self, node: nodes.Concat, frame) -> None:
        self.write("environment.checked_join(context.eval_ctx.autoescape, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_CONSTRUCTORS = (_step, BoundedRange, Namespace, dict, Cycler, Joiner)  # the globals templates may call


class PromptEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset(ImmutableSandboxedEnvironment.default_binop_table)

    def __init__(self, filters: dict[str, Any]):
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,  # prompts are not HTML; untrusted text is escaped by `fence` explicitly
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_finalize,
        )
        self.globals = {"range": BoundedRange, "dict": dict, "namespace": Namespace, "cycler": Cycler}
        self.globals.update({"joiner": Joiner, STEP: _step})
        self.filters.update(filters)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    def concat(self, pieces) -> str:  # captured blocks, macro bodies, the whole render
        budget, kept, total = current_budget(), [], 0
        for piece in pieces:
            total += len(piece)
            budget.expect(total, "rendered text")
            kept.append(piece)
        return budget.charge("".join(kept))

    def checked_join(self, autoescape: bool, values: tuple) -> str:  # the `~` operator
        budget = current_budget()
        budget.expect(sum(size_of(v, budget.max_chars + 1) for v in values), "a ~ result")
        return budget.charge(markup_join(values) if autoescape else "".join(map(str, values)))

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        if operator == "*":
            seq, times = (right, left) if isinstance(left, int) else (left, right)
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
                budget.expect(size_of(seq, budget.max_chars + 1) * max(times, 0), "a * result")
            elif isinstance(seq, int) and isinstance(times, int):
                budget.expect((seq.bit_length() + times.bit_length()) * 30103 // 100000, "a number")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            budget.expect(min(right, 1 << 62) * left.bit_length() * 30103 // 100000, "a number")
        elif operator == "%" and isinstance(left, str):
            budget.expect(len(left) + _percent_widths(left, right) + size_of(right, budget.max_chars + 1), "a % result")
        return budget.charge(self.binop_table[operator](left, right))

    def wrap_str_format(self, value: Any):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__

        def checked_format(*args, **kwargs):
            budget = current_budget()
            mapping = args[0] if value.__name__ == "format_map" and args else {}
            extra = _format_widths(fmt, args, kwargs if not mapping else dict(mapping))
            budget.expect(len(fmt) + extra + size_of((args, kwargs), budget.max_chars + 1), "a format() result")
            return budget.charge(wrapper(*args, **kwargs))

        checked_format.synth_checked = True
        return checked_format

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = current_budget()
        budget.step()
        if isinstance(__obj, Undefined) or any(__obj is f for f in _CONSTRUCTORS):
            return __context.call(__obj, *args, **kwargs)  # an undefined name raises its own error here
        if isinstance(__obj, _SAFE_CALLABLES) or getattr(__obj, "synth_checked", False):
            return __context.call(__obj, *args, **kwargs)
        owner, name = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
        if isinstance(owner, str) and name in _STR_METHODS:
            if name in _WIDTH_METHODS:
                budget.numbers((*args, *kwargs.values()))
            budget.charge(owner, f"the text .{name}() reads")
            args = _check_str_method(budget, name, owner, args, kwargs)
            return budget.charge(__obj(*args, **kwargs), f"the result of .{name}()")
        if isinstance(owner, (LoopContext, Cycler)) or any(
            isinstance(owner, kind) and name in names for kind, names in _CONTAINER_METHODS.items()
        ):
            return budget.charge(__context.call(__obj, *args, **kwargs), f"the result of .{name}()")
        shown = f"{type(owner).__name__}.{name}" if owner is not None else name or type(__obj).__name__
        raise budget.refuse(f"calling {shown}() is not allowed in a prompt template")
