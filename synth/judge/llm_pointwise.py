"""LLM pointwise stage: one request per candidate, "does this passage answer the query?".

The prompt shows the query, the query's positive as a *reference* answer, and the candidate, each
fenced (escaped, in tags the system message declares to be data). The answer schema is
``{"relevant": boolean}``. Rule: ``relevant: true`` -> ``false_negative`` (the candidate answers the
query, so training on it as a negative would teach the model to push away a right answer);
``relevant: false`` -> ``negative``. Score is 1.0 / 0.0. We deliberately do not ask "as good as the
positive?": a partial answer is still not a safe negative, and every extra field is a place for a
small model to fail.

Failures never raise and never decide: invalid JSON, schema violations, refusals and truncation
(``length``) give ``uncertain`` with ``failed=True`` (fail closed; policies treat uncertain as
suspect). Requests are deterministic (temperature 0, per-candidate seed), so a rerun is served from
the request cache; the client stage is ``judge:<stage name>`` for accounting.
"""

from __future__ import annotations

from typing import Callable, Sequence

from synth.core.errors import UserError
from synth.core.seeding import request_seed
from synth.core.text import truncate
from synth.judge import fingerprint_of, restrict
from synth.judge.base import Candidate, StageVerdict
from synth.llm.base import ChatRequest, ChatResponse, schema_name
from synth.llm.prompts import Prompt, PromptLibrary


def resolve_client(cfg, llm_client: Callable | None, name: str):
    if llm_client is None:
        raise UserError(f"{name}: an llm_* judge stage needs an LLM: set `llm:` on the stage or give the command one")
    client = llm_client(cfg.llm)
    if client is None:
        raise UserError(f"{name}: no LLM configured for this stage (set `llm:` on it)")
    return client


def failure_verdict(resp: ChatResponse | None, model: str, sha: str, what: str = "") -> StageVerdict:
    if resp is None:
        detail = "no response"
    elif not resp.ok:
        detail = f"llm failure: {resp.error}" + (f" ({resp.detail[:120]})" if resp.detail else "")
    else:
        detail = f"unusable answer: {what or str(resp.parsed)[:120]}"
    return StageVerdict("uncertain", float("nan"), model, sha, detail, failed=True)


class LLMJudge:
    """What every LLM stage sets up the same way: its name, seed, prompt (checked by ``check_prompt``)
    and client."""

    kind: str

    def __init__(
        self,
        cfg,
        *,
        llm_client: Callable | None = None,
        prompts: PromptLibrary | None = None,
        seed: int = 0,
        **_context,
    ):
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self.seed = seed
        self.prompt: Prompt = (prompts or PromptLibrary()).get(cfg.prompt, f"{self.name}.prompt")
        self.check_prompt()  # before the client: a bad prompt is reported without starting a model
        self.client = resolve_client(cfg, llm_client, self.name)

    def check_prompt(self) -> None:
        pass


class LLMPointwiseJudge(LLMJudge):
    kind = "llm_pointwise"

    def check_prompt(self) -> None:
        props = (self.prompt.schema or {}).get("properties", {})
        if props.get("relevant", {}).get("type") != "boolean":
            raise UserError(f"{self.name}.prompt: {self.prompt.path} needs a schema with a boolean property 'relevant'")

    def fingerprint(self) -> str:
        c = self.cfg
        return fingerprint_of(
            kind=self.kind,
            llm=self.client.identity,
            prompt=self.prompt.sha256,
            seed=self.seed,
            max_tokens=c.max_tokens,
            max_doc_chars=c.max_doc_chars,
            decides=sorted(c.decides),
        )

    def build_request(self, c: Candidate) -> ChatRequest:
        n = self.cfg.max_doc_chars
        # cut in code before fencing: the fence must close after whatever text survives
        messages = self.prompt.render(
            query=truncate(c.query, n), positive=truncate(c.positive, n), candidate=truncate(c.doc, n)
        )
        params = {
            "temperature": 0.0,
            "max_tokens": self.cfg.max_tokens,
            "seed": request_seed(self.seed, "judge_pointwise", c.query_id, c.doc_id),
        }
        return ChatRequest.make(messages, params, self.prompt.schema, schema_name(self.prompt.name))

    def judge(self, candidates: Sequence[Candidate]) -> list[StageVerdict]:
        if not candidates:
            return []
        requests = [self.build_request(c) for c in candidates]
        responses = self.client.complete(f"judge:{self.name}", requests)
        sha, out = self.prompt.sha256, []
        for resp in responses:
            model = (resp.model if resp is not None else "") or self.client.model
            parsed = resp.parsed if resp is not None and resp.ok else None
            rel = parsed.get("relevant") if isinstance(parsed, dict) else None
            if not isinstance(rel, bool):
                out.append(failure_verdict(resp, model, sha, "no boolean 'relevant'"))
                continue
            verdict, detail = restrict(
                "false_negative" if rel else "negative", self.cfg.decides, f"relevant={str(rel).lower()}"
            )
            out.append(StageVerdict(verdict, 1.0 if rel else 0.0, model, sha, detail))
        return out
