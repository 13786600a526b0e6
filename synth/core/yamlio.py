"""The one YAML reader for everything a user writes (recipes, ``--set`` values, judge cascades, ``--llm``),
and the one place that turns what is wrong with it into a one-line ``UserError``: YAML errors here,
pydantic validation errors in ``validate``.

PyYAML's ``safe_load`` alone is not enough at the edges:
- an alias bomb ("billion laughs") composes in microseconds, because aliases share nodes, and then
  explodes in whatever walks the result (pydantic, ``model_dump``): minutes and gigabytes. The
  composed node graph is therefore measured *before* anything is constructed: its size with every
  alias expanded, its nesting depth, and its alias count, each against a limit;
- a duplicate key silently keeps the last value; here it is an error naming both lines;
- unknown tags (``!!python/object``) and syntax errors are ``UserError`` one-liners naming file:line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from synth.core.errors import UserError

MAX_BYTES = 1 << 20  # a recipe or cascade is a few KiB; a MiB is a mistake (a data file passed as a recipe)
MAX_DEPTH = 64
MAX_ALIASES = 1000
MAX_NODES = 100_000  # scalars + collections, every alias expanded


class YAMLInputError(UserError):
    """Text that is not acceptable YAML; ``problem`` is the reason without the location."""

    def __init__(self, where: str, problem: str):
        self.problem = problem
        super().__init__(f"{where}: invalid YAML: {problem}")


class _Limit(Exception):
    def __init__(self, mark, message: str):
        self.mark, self.message = mark, message


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts aliases and depth while composing and rejects duplicate keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limit(self.peek_event().start_mark, f"more than {MAX_ALIASES} aliases")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:  # checked before recursing: PyYAML's composer recurses per level
            raise _Limit(self.peek_event().start_mark, f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then an explicit key is the documented way to override
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue  # an unhashable key; the base constructor reports it
                if first != key_node.start_mark.line + 1:
                    raise _Limit(key_node.start_mark, f"duplicate key {key!r} (first at line {first})")
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root) -> int:
    """Nodes in the tree ``root`` stands for with every alias expanded, in time linear in the composed
    graph (shared, aliased nodes are measured once); raises past MAX_NODES."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise _Limit(node.start_mark, "an alias refers to a node that contains it (recursive alias)")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            on_path.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [x for kv in node.value for x in kv]
            for child in children:
                total += size(child)
            on_path.discard(key)
        if total > MAX_NODES:  # named at the innermost node that is too big: the line of the bomb
            raise _Limit(node.start_mark, f"expands to more than {MAX_NODES} values (an alias bomb?)")
        sizes[key] = total
        return total

    return size(root)  # depth is bounded by the composer (MAX_DEPTH), so this recursion is too


def load_text(text: str, where: str) -> Any:
    """Parse one YAML document; errors are ``UserError("<where>:<line>: ...")``."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise YAMLInputError(where, f"{size} bytes, over the {MAX_BYTES} byte limit")
    loader = None
    try:
        loader = _Loader(text)  # its reader rejects control characters (a binary file) right here
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Limit as e:
        raise YAMLInputError(f"{where}:{e.mark.line + 1}", e.message) from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise YAMLInputError(f"{where}:{line}", f"control character #x{e.character:04x} (a binary file?)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YAMLInputError(f"{where}:{mark.line + 1}" if mark else where, problem) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: str | Path, what: str = "YAML") -> Any:
    """Read and parse a YAML file (``what`` names it in the missing-file error)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:  # before reading it: a data file passed by mistake may be huge
            raise YAMLInputError(str(path), f"{path.stat().st_size} bytes, over the {MAX_BYTES} byte limit")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected a {what} file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 (byte {e.start})") from None
    return load_text(text, str(path))


def load_mapping(path: str | Path, what: str) -> dict:
    """``load_file`` for files whose top level must be a mapping (recipes, cascades)."""
    raw = load_file(path, what)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return raw


def validation_line(where: str, err: ValidationError) -> str:
    """The first problem of ``err`` as ``where: dotted.key: problem (got value)``, plus how many more."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] != "missing":
        msg += f" (got {first['input']!r})"[:120]
    more = len(err.errors()) - 1
    return f"{where}: {loc + ': ' if loc else ''}{msg}" + (
        f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    )


def validate(model: Any, raw: Any, where: str) -> Any:
    """``raw`` validated as ``model`` (a pydantic model class, or any type such as a discriminated union);
    a validation error is a one-line ``UserError`` naming ``where`` and the key."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(raw)
        return TypeAdapter(model).validate_python(raw)
    except ValidationError as e:
        raise UserError(validation_line(where, e)) from None
