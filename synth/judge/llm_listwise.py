"""LLM listwise stage (RLHN style): all candidates of one query in one prompt, judged together.

Seeing the query's candidates side by side is cheaper than one request each (the query and the
reference positive are sent once) and lets the model compare. Candidates get short opaque ids
``p1..pN`` (per prompt, mapped back to doc ids in code: a doc id may be long or contain markup), and
the answer is a JSON object KEYED BY THOSE IDS, never a list by position: a skipped or reordered
item cannot shift verdicts onto the wrong passage. The schema is built per request with exactly the
prompt's ids as required properties (``additionalProperties: false``), each a boolean "relevant"
(true -> false_negative, false -> negative; the same rule as the pointwise stage).

Candidates of a query are sorted by doc id and cut into prompts of ``max_candidates`` so the
requests (and hence the request cache) do not depend on input order. Fail closed: a failed response
makes all of its candidates uncertain+failed; a missing or non-boolean id makes that candidate
uncertain+failed; an unknown extra id makes the whole answer untrustworthy (it is not an answer to
this prompt), so all of its candidates are uncertain+failed.
"""

from __future__ import annotations

from typing import Sequence

from synth.core.seeding import request_seed
from synth.core.text import truncate
from synth.judge import fingerprint_of, restrict
from synth.judge.base import Candidate, StageVerdict
from synth.judge.llm_pointwise import LLMJudge, failure_verdict
from synth.llm.base import ChatRequest, schema_name


def verdict_schema(ids: list[str]) -> dict:
    """The answer schema for one prompt: exactly these ids, each a boolean."""
    return {
        "type": "object",
        "properties": {i: {"type": "boolean"} for i in ids},
        "required": list(ids),
        "additionalProperties": False,
    }


def group_candidates(candidates: Sequence[Candidate], max_candidates: int) -> list[list[int]]:
    """Indices into ``candidates``: one group per (query, positive), sorted by doc id, cut into
    prompts of at most ``max_candidates``. A duplicated (query_id, doc_id) is judged once per group."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault((c.query_id, c.positive_id), []).append(i)
    out = []
    for key in sorted(groups):
        idx = sorted(groups[key], key=lambda i: candidates[i].doc_id)
        for s in range(0, len(idx), max_candidates):
            out.append(idx[s : s + max_candidates])
    return out


class LLMListwiseJudge(LLMJudge):
    kind = "llm_listwise"

    def fingerprint(self) -> str:
        c = self.cfg
        return fingerprint_of(
            kind=self.kind,
            llm=self.client.identity,
            prompt=self.prompt.sha256,
            seed=self.seed,
            max_tokens=c.max_tokens,
            max_doc_chars=c.max_doc_chars,
            max_candidates=c.max_candidates,
            decides=sorted(c.decides),
        )

    def build_request(self, group: Sequence[Candidate]) -> tuple[ChatRequest, list[str]]:
        """The request for one prompt's candidates and the ids it uses, aligned with ``group``."""
        n = self.cfg.max_doc_chars
        ids = [f"p{k + 1}" for k in range(len(group))]
        first = group[0]
        passages = [{"id": i, "text": truncate(c.doc, n)} for i, c in zip(ids, group)]
        messages = self.prompt.render(
            query=truncate(first.query, n), positive=truncate(first.positive, n), passages=passages, ids=ids
        )
        params = {
            "temperature": 0.0,
            "max_tokens": self.cfg.max_tokens,
            "seed": request_seed(self.seed, "judge_listwise", first.query_id, *[c.doc_id for c in group]),
        }
        return ChatRequest.make(messages, params, verdict_schema(ids), schema_name(self.prompt.name)), ids

    def judge(self, candidates: Sequence[Candidate]) -> list[StageVerdict]:
        if not candidates:
            return []
        groups = group_candidates(candidates, self.cfg.max_candidates)
        built = [self.build_request([candidates[i] for i in g]) for g in groups]
        responses = self.client.complete(f"judge:{self.name}", [r for r, _ in built])
        sha = self.prompt.sha256
        out: list[StageVerdict | None] = [None] * len(candidates)
        for g, (_, ids), resp in zip(groups, built, responses):
            model = (resp.model if resp is not None else "") or self.client.model
            parsed = resp.parsed if resp is not None and resp.ok else None
            extra = sorted(set(parsed) - set(ids)) if isinstance(parsed, dict) else []
            for i, pid in zip(g, ids):
                if not isinstance(parsed, dict):
                    out[i] = failure_verdict(resp, model, sha, "not an object")
                elif extra:
                    out[i] = failure_verdict(resp, model, sha, f"unknown ids {extra[:5]}")
                elif not isinstance(parsed.get(pid), bool):
                    out[i] = failure_verdict(resp, model, sha, f"no boolean for {pid}")
                else:
                    rel = parsed[pid]
                    verdict, detail = restrict(
                        "false_negative" if rel else "negative",
                        self.cfg.decides,
                        f"{pid}={str(rel).lower()} of {len(ids)}",
                    )
                    out[i] = StageVerdict(verdict, 1.0 if rel else 0.0, model, sha, detail)
        return out  # type: ignore[return-value]
