"""Prompts are data: Jinja2 files in ``prompts/``, referenced by name from recipes.

``prompts/<name>.j2`` renders the user message. It may define a system message with
``{% set system %}...{% endset %}``. The answer's JSON schema sits beside it in
``prompts/<name>.schema.json``. Rendering uses ``StrictUndefined``: a missing variable is an error,
not an empty string. Untrusted text (corpus passages, model output) goes in through the ``fence``
filter, which escapes it and wraps it in a tag the prompt tells the model to treat as data.

A prompt's ``sha256`` (template + schema) goes into every row it helped make.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from synth.assets import PROMPTS
from synth.core.errors import UserError

PROMPTS_DIR = PROMPTS  # the shipped prompts (synth.assets)


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
            user = self.template.render(**variables).strip()
            system = str(getattr(self.template.make_module(variables), "system", "") or "").strip()
        except jinja2.UndefinedError as e:
            raise UserError(f"{self.path}: {e.message} (variables given: {', '.join(sorted(variables))})") from None
        messages = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": user}]


def _environment(folder: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # prompts are not HTML; untrusted text is escaped by `fence` explicitly
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fence"] = fence
    env.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


class PromptLibrary:
    """Looks a name up in the recipe's own ``prompts/`` folder first, then in the shipped one."""

    def __init__(self, folders: list[Path] | None = None):
        self.folders = [Path(f) for f in (folders or [])] + [PROMPTS_DIR]
        self._cache: dict[str, Prompt] = {}

    def get(self, name: str, where: str = "prompt") -> Prompt:
        if name in self._cache:
            return self._cache[name]
        for folder in self.folders:
            path = folder / f"{name}.j2"
            if path.exists():
                break
        else:
            known = sorted({p.stem for f in self.folders if f.exists() for p in f.glob("*.j2")})
            raise UserError(f"{where}: no prompt named {name!r} (known: {', '.join(known) or 'none'})")
        source = path.read_text(encoding="utf-8")
        schema_path = path.with_name(f"{name}.schema.json")
        schema_text = schema_path.read_text(encoding="utf-8") if schema_path.exists() else None
        try:
            schema = json.loads(schema_text) if schema_text is not None else None
        except json.JSONDecodeError as e:
            raise UserError(f"{schema_path}:{e.lineno}: invalid JSON schema: {e.msg}") from None
        try:
            template = _environment(folder).get_template(path.name)
        except jinja2.TemplateSyntaxError as e:
            raise UserError(f"{path}:{e.lineno}: template syntax error: {e.message}") from None
        digest = hashlib.sha256(source.encode() + b"\0" + (schema_text or "").encode()).hexdigest()
        prompt = self._cache[name] = Prompt(name, template, schema, digest, str(path))
        return prompt
