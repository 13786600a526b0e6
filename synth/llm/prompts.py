"""Prompts are data: Jinja2 files in ``prompts/``, referenced by name from recipes.

``prompts/<name>.j2`` renders the user message. It may define a system message with
``{% set system %}...{% endset %}``. The answer's JSON schema sits beside it in
``prompts/<name>.schema.json``. Rendering uses ``StrictUndefined``: a missing variable is an error,
not an empty string. Untrusted text (corpus passages, model output) goes in through the ``fence``
filter, which escapes it and wraps it in a tag the prompt tells the model to treat as data.

Templates are untrusted (recipes and prompt folders are shared like code): they render in
``synth.llm.sandbox`` and every render error is one ``UserError`` line naming the prompt file.

A prompt's ``sha256`` (template + schema) goes into every row it helped make.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import SecurityError

from synth.assets import PROMPTS
from synth.core.errors import UserError
from synth.core.limits import limit, over_limit
from synth.llm.sandbox import PromptEnvironment
from synth.llm.sandbox_budget import TemplateRefused, rendering

PROMPTS_DIR = PROMPTS  # the shipped prompts (synth.assets)
# A prompt name is a file name in a prompt folder, never a path out of it.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


def fence(text: str, tag: str = "document") -> str:
    """Escape ``<``, ``>`` and ``&`` so the text cannot close the fence or open another, then wrap it."""
    return f"<{tag}>\n{html.escape(str(text), quote=False)}\n</{tag}>"


@dataclass(frozen=True)
class Prompt:
    name: str
    template: jinja2.Template
    schema: dict | None
    sha256: str
    path: str

    def render(self, **variables) -> list[dict[str, str]]:
        """The chat messages: an optional system message, then the user message."""
        try:
            with rendering(self.path):
                user = self.template.render(**variables).strip()
            with rendering(self.path):
                system = str(getattr(self.template.make_module(variables), "system", "") or "").strip()
        except UserError:
            raise
        except TemplateRefused as e:
            raise UserError(_one_line(str(e))) from None
        except jinja2.UndefinedError as e:
            if isinstance(e, SecurityError):  # an unsafe attribute, used: the sandbox's own message
                raise UserError(_one_line(f"{self.path}: refused: {e.message}")) from None
            given = ", ".join(sorted(variables))
            raise UserError(_one_line(f"{self.path}: {e.message} (variables given: {given})")) from None
        except SecurityError as e:
            raise UserError(_one_line(f"{self.path}: refused: {e.message}")) from None
        except RecursionError:
            raise UserError(f"{self.path}: the template recurses too deeply (a macro or loop calling itself)") from None
        except MemoryError:
            raise UserError(f"{self.path}: the template ran out of memory while rendering") from None
        except Exception as e:  # any other error a filter or operator raises on the template's values
            raise UserError(_one_line(f"{self.path}: template error: {type(e).__name__}: {e}")) from None
        messages = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": user}]


def _one_line(text: str, width: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _environment() -> PromptEnvironment:
    return PromptEnvironment({"fence": fence, "tojson": lambda v: json.dumps(v, ensure_ascii=False)})


def _read_text(path: Path, what: str) -> str:
    """A prompt file's text, at most ``max_prompt_chars`` characters (a template larger than any prompt
    is refused before it is read whole); newlines read as in text mode, so digests are unchanged."""
    if not path.is_file():
        raise UserError(f"{path}: not a regular file ({what})")
    bound = limit("max_prompt_chars")
    try:
        with path.open("rb") as f:
            data = f.read(bound * 4 + 1)  # UTF-8 takes at most 4 bytes a character
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({what}): byte {e.start}") from None
    except OSError as e:
        raise UserError(_one_line(f"{path}: cannot read the {what}: {e.strerror or e}")) from None
    if len(text) > bound:
        raise over_limit("max_prompt_chars", str(path), f"a {what} of more than {bound:,} characters")
    return text.replace("\r\n", "\n").replace("\r", "\n")


class PromptLibrary:
    """Looks a name up in the recipe's own ``prompts/`` folder first, then in the shipped one."""

    def __init__(self, folders: list[Path] | None = None):
        extra = [Path(f) for f in (folders or [])]
        for folder in extra:  # a typo must not fall back to the shipped prompts silently
            if not folder.is_dir():
                problem = "no such folder" if not folder.exists() else "not a folder"
                raise UserError(f"prompts_dir: {problem}: {folder}")
        self.folders = extra + [PROMPTS_DIR]
        self._cache: dict[str, Prompt] = {}

    def get(self, name: str, where: str = "prompt") -> Prompt:
        if name in self._cache:
            return self._cache[name]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
            raise UserError(
                _one_line(
                    f"{where}: {name!r} is not a prompt name: use letters, digits, '_', '.' and '-' "
                    "(no '/' or '..'; the file is <name>.j2 in prompts_dir or the shipped prompts)"
                )
            )
        for folder in self.folders:
            path = folder / f"{name}.j2"
            if path.exists():
                break
        else:
            known = sorted({p.stem for f in self.folders if f.is_dir() for p in f.glob("*.j2")})
            raise UserError(_one_line(f"{where}: no prompt named {name!r} (known: {', '.join(known) or 'none'})"))
        source = _read_text(path, "prompt template")
        schema_path = path.with_name(f"{name}.schema.json")
        schema_text = _read_text(schema_path, "JSON schema") if schema_path.exists() else None
        try:
            schema = json.loads(schema_text) if schema_text is not None else None
        except json.JSONDecodeError as e:
            raise UserError(f"{schema_path}:{e.lineno}: invalid JSON schema: {e.msg}") from None
        except RecursionError:
            raise UserError(f"{schema_path}: invalid JSON schema: nested too deeply") from None
        try:
            template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise UserError(_one_line(f"{path}:{e.lineno}: template syntax error: {e.message}")) from None
        except RecursionError:
            raise UserError(f"{path}: template syntax error: nested too deeply") from None
        except Exception as e:  # e.g. a number literal too long to read
            raise UserError(_one_line(f"{path}: template syntax error: {type(e).__name__}: {e}")) from None
        digest = hashlib.sha256(source.encode() + b"\0" + (schema_text or "").encode()).hexdigest()
        prompt = self._cache[name] = Prompt(name, template, schema, digest, str(path))
        return prompt
