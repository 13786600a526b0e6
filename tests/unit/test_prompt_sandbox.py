"""Prompt templates are untrusted (``synth.llm.sandbox``): crafted templates that try to run code, read
other files, loop or recurse without end, or build huge strings are each refused with one ``UserError``
line naming the prompt file and the reason, soon, and without side effects. The shipped prompts render
exactly as plain Jinja2 renders them, so their text and digests do not change. Also here: the dry run's
placeholders stay small whatever an answer schema allows (``synth.llm.plan``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jinja2
import pytest

from synth.core.errors import UserError
from synth.llm.plan import placeholder
from synth.llm.prompts import PROMPTS_DIR, PromptLibrary, fence
from synth.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED_VARIABLES = {
    "judge_listwise": {
        "query": "q <x>",
        "positive": "p & q",
        "passages": [{"id": "p1", "text": "a <b>"}, {"id": "p2", "text": "c"}],
        "ids": ["p1", "p2"],
    },
    "judge_pointwise": {"query": "q", "positive": "p", "candidate": "</candidate> c"},
    "persona_from_doc": {"document": "a document"},
    "synthetic_negative": {"n": 3, "words": 50, "query": "q", "document": "d"},
    "synthetic_query": {"query_type": "keyword", "persona": "a nurse", "document": "d"},
}


def _render(tmp_path: Path, source: str, name: str = "evil", **variables) -> list[dict]:
    (tmp_path / f"{name}.j2").write_text(source, encoding="utf-8")
    prompt = PromptLibrary([tmp_path]).get(name, "synthetic_queries.prompt")
    return prompt.render(**({"document": "doc"} | variables))


def _refused(tmp_path: Path, source: str, reason: str) -> str:
    """Render ``source`` as a recipe's prompt: it must fail with one line naming the file and ``reason``."""
    with pytest.raises(UserError) as caught:
        _render(tmp_path, source)
    line = str(caught.value)
    assert "\n" not in line and line.startswith(str(tmp_path / "evil.j2")), line
    assert reason in line, line
    return line


@pytest.mark.parametrize("folder", [PROMPTS_DIR, REPO / "prompts"], ids=["shipped", "checkout"])
def test_shipped_prompts_render_exactly_as_plain_jinja_with_unchanged_digests(folder):
    reference = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    reference.filters["fence"] = fence
    library = PromptLibrary([folder])
    for name, variables in SHIPPED_VARIABLES.items():
        template = reference.get_template(f"{name}.j2")
        user = template.render(**variables).strip()
        system = str(template.make_module(variables).system).strip()
        assert library.get(name).render(**variables) == [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        text = (folder / f"{name}.j2").read_text() + "\0" + (folder / f"{name}.schema.json").read_text()
        assert library.get(name).sha256 == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    "payload",
    [
        "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
        "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
        "{{ namespace.__init__.__globals__.os.system('touch MARKER') }}",
        "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ self._TemplateReference__context.environment }}",
        "{{ '{0.__class__.__mro__}'.format(document) }}",
        "{{ '{0.__init__.__globals__}'.format(cycler) }}",
        "{{ '{a.__class__}'.format_map({'a': document}) }}",
        "{{ document|attr('__class__') }}",
        "{% set ns = namespace() %}{{ ns.__class__.__init__.__globals__ }}",
        "{{ range.__init__.__globals__ }}",
        "{{ ''.maketrans('a', 'b') }}",
        "{{ 'x'.translate({120: 'y'}) }}",
        "{{ document.encode().decode }}{{ document.encode().decode('utf-8') }}",
    ],
)
def test_attribute_escapes_are_refused_and_run_nothing(tmp_path, payload):
    marker = tmp_path / "pwned"
    (tmp_path / "prompts").mkdir()
    with pytest.raises(UserError) as caught:
        _render(tmp_path / "prompts", payload.replace("MARKER", str(marker)))
    line = str(caught.value)
    assert "\n" not in line and line.startswith(str(tmp_path / "prompts" / "evil.j2")), line
    assert any(word in line for word in ("unsafe", "not allowed", "undefined")), line
    assert not marker.exists()


@pytest.mark.parametrize("tag", ["{% include 'other.j2' %}", "{% import 'other.j2' as o %}",
                                 "{% from 'other.j2' import m %}", "{% extends 'other.j2' %}"])  # fmt: skip
def test_include_import_and_extends_are_refused_at_load(tmp_path, tag):
    (tmp_path / "other.j2").write_text("{% macro m() %}{{ cycler.__init__ }}{% endmacro %}secret")
    line = _refused(tmp_path, tag, "is not allowed in a prompt template")
    assert tag.split()[1] in line  # names the tag


@pytest.mark.timeout(120)  # a bomb that is not refused fails here instead of hanging the run
@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{% for i in range(10**12) %}{% endfor %}", "SYNTH_MAX_TEMPLATE_RANGE"),
        ("{{ range(2**70)|length }}", "SYNTH_MAX_TEMPLATE_RANGE"),
        ("{{ 'x'|join(range(10**10)) }}", "SYNTH_MAX_TEMPLATE_RANGE"),
        (
            "{% for a in range(9999) %}{% for b in range(9999) %}{% for c in range(9999) %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "steps",
        ),
        ("{% for a in range(9999) %}{% for b in range(9999) if false %}{% endfor %}{% endfor %}", "steps"),
        ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "recurses"),
        ("{% macro m(n) %}{% if n < 80 %}{{ m(n + 1) }}{{ m(n + 1) }}{% endif %}{% endmacro %}{{ m(0) }}", "steps"),
        ("{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}", "recurses"),
        ("{% block b %}{{ self.b() }}{% endblock %}", "recurses"),
        ("{{ 'x' * 10**10 }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ 10**10 * 'x' }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ ['x'] * 10**10 }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{% set a = ['x'] * 100000 %}{{ [a] * 10000 }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ range(9999)|map('string')|join('x' * 999999) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ range(9999)|map('center', 999999)|list }}", "builds more than"),
        ("{{ 'x'|center(10**10) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ 'x'.ljust(10**10) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ '{0:>999999999}'.format(1) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ ('{:>99999}' * 20000).format(*range(9999)) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ '%999999999d' % 1 }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ '%*d' % (10**9, 1) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ '%999999999d'|format(1) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{% set s = 'x' * 999999 %}{{ s.replace('x', s) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{% set s = 'x' * 999999 %}{{ s|replace('x', s) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{% set s = '\t' * 99999 %}{{ s.expandtabs(99999) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{% set s = '\n' * 99999 %}{{ s|indent(99999) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ ('x ' * 99999)|wordwrap(1, wrapstring='y' * 99999) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{% set ns = namespace(s='x') %}{% for i in range(99) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "CHARS"),
        ("{% set ns = namespace(s='x') %}{% for i in range(99) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "CHARS"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(99) %}"
            "{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}",
            "SYNTH_MAX_PROMPT_CHARS",
        ),
        ("{% for i in range(9999) %}{{ 'x' * 999999 }}{% endfor %}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{{ 2 ** (10**10) }}", "SYNTH_MAX_PROMPT_CHARS"),
        ("{% set ns = namespace(x=3) %}{% for i in range(99) %}{% set ns.x = ns.x * ns.x %}{% endfor %}", "CHARS"),
        ("{{ lipsum(n=10**9) }}", "'lipsum' is undefined"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ 10**5000 }}", "ValueError"),
        ("{{ nope }}", "'nope' is undefined"),
        ("{{ " + "9" * 5000 + " }}", "template syntax error"),
        ("{{ " + "(" * 5000 + " }}", "template syntax error"),
    ],
)
def test_loop_recursion_and_size_bombs_are_refused_with_one_line(tmp_path, source, reason):
    _refused(tmp_path, source, reason)


def test_ordinary_template_features_still_work(tmp_path):
    source = (
        "{% set system %}sys {{ 'a' ~ 1 }}{% endset %}"
        "{% macro item(x) %}[{{ x|upper }}{{ caller() }}]{% endmacro %}"
        "{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{{ i }}{% else %}none{% endfor %}"
        "{% call item('q') %}c{% endcall %}{{ ['b', 'a']|sort|join(', ') }} {{ '{:>4}'.format(7) }}"
        "{{ '%3d' % 5 }} {{ 'A-B'.lower().split('-')|join('+') }} {{ {'k': 1}.items()|list }}"
        "{% set ns = namespace(n=0) %}{% for w in document.split() %}{% set ns.n = ns.n + 1 %}{% endfor %}"
        " {{ ns.n }} {{ document|fence }} {{ {'a': [1]}|tojson }} {{ 'x' * 3 }}"
    )
    assert _render(tmp_path, source, document="two words") == [
        {"role": "system", "content": "sys a1"},
        {
            "role": "user",
            "content": "a0b1a2[Qc]a, b    7  5 a+b [('k', 1)] 2 <document>\ntwo words\n</document> {\"a\": [1]} xxx",
        },
    ]


def test_limits_come_from_their_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_TEMPLATE_RANGE", "50")
    _refused(tmp_path, "{% for i in range(51) %}{% endfor %}", "range() inside a prompt template (a range of 51")
    monkeypatch.setenv("SYNTH_MAX_PROMPT_CHARS", "100")
    _refused(tmp_path, "{{ document * 101 }}", "one rendered prompt")
    (tmp_path / "big.j2").write_text("x" * 101)
    with pytest.raises(
        UserError, match=r"big\.j2: larger than the limit .*a prompt template of more than 100 characters"
    ):
        PromptLibrary([tmp_path]).get("big")


@pytest.mark.parametrize("name", ["../synthetic_query", "sub/x", "/etc/passwd", "a..b", "", ".hidden", "x\ny"])
def test_prompt_names_that_are_not_file_names_are_one_line_naming_the_field(tmp_path, name):
    with pytest.raises(UserError) as caught:
        PromptLibrary([tmp_path]).get(name, "synthetic_queries.prompt")
    line = str(caught.value)
    assert "\n" not in line and line.startswith("synthetic_queries.prompt: ") and "not a prompt name" in line


def test_a_missing_or_file_prompts_dir_is_refused_not_ignored(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_text("")
    for folder, problem in ((tmp_path / "missing", "no such folder"), (file, "not a folder")):
        with pytest.raises(UserError, match=f"^prompts_dir: {problem}: {folder}$"):
            PromptLibrary([folder])
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text((REPO / "recipes" / "synthetic_queries.yaml").read_text())
        with pytest.raises(UserError) as caught:
            load_recipe(REPO / "recipes" / "synthetic_queries.yaml", [f"prompts_dir={folder}"])
        assert str(caught.value).endswith(f"prompts_dir: {problem}: {folder}")


@pytest.mark.timeout(600)
def test_dry_run_with_an_evil_prompt_exits_2_with_one_line_and_runs_nothing(tmp_path, synth_cli):
    marker = tmp_path / "pwned"
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "synthetic_query.schema.json").write_text((PROMPTS_DIR / "synthetic_query.schema.json").read_text())
    (prompts / "synthetic_query.j2").write_text(f"{{{{ cycler.__init__.__globals__.os.popen('touch {marker}') }}}}")
    proc = synth_cli(
        "run", "recipes/resa2_plus_synthetic.yaml", "--dry-run", "--set", f"prompts_dir={prompts}", timeout=500
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert f"{prompts / 'synthetic_query.j2'}: refused: access to attribute '__init__'" in errors[0]
    assert "Traceback" not in proc.stderr and not marker.exists()


def test_dry_run_placeholders_stay_within_one_real_reply():
    huge = {
        "type": "object",
        "properties": {
            "a": {"type": "array", "maxItems": 10**9, "items": {"type": "string", "maxLength": 10**9}},
            "b": {"type": "string", "minLength": 10**12},
            "c": {"type": "integer", "maximum": "many"},
        },
    }
    value = placeholder(huge, 64, "planned-1")
    assert len(value["a"]) <= 64  # an array item takes at least one token
    assert len(json.dumps(value)) <= 64 * 64 + 100  # at most 64 characters a token for the whole answer
    assert value["c"] == 0
    assert len(placeholder({"type": "string", "maxLength": 10**12}, 10**9, "t")) <= 32 * 2**20  # one reply
    query = PromptLibrary().get("synthetic_query").schema
    assert len(placeholder(query, 64, "t")["query"]) == 300  # small schemas: the largest answer, as before
