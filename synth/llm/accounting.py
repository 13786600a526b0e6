"""Token accounting, cost estimates and the budget.

Usage is kept per (stage, model). Cost comes from the recipe's price table (USD per 1M tokens); a
model without a price has no cost (and a USD budget then refuses to run it). The budget is checked
with an upper bound on each request's tokens *before* it is sent, so a run stops before exceeding it.
"""

from __future__ import annotations

from synth.llm.base import ChatRequest, ChatResponse, Usage
from synth.llm.config import Budget, Price

# Chat templates add a few tokens per message (role markers, separators).
_PER_MESSAGE_OVERHEAD = 8


def prompt_tokens_upper(request: ChatRequest) -> int:
    """A true upper bound for byte-level BPE tokenizers: a token never covers less than one byte."""
    return sum(len(content.encode("utf-8")) + _PER_MESSAGE_OVERHEAD for _, content in request.messages) + 16


def prompt_tokens_estimate(request: ChatRequest) -> int:
    """A typical count (about 4 characters a token for English) for dry-run cost estimates."""
    return sum(len(content) // 4 + _PER_MESSAGE_OVERHEAD for _, content in request.messages)


def request_tokens_upper(request: ChatRequest, max_reasks: int) -> tuple[int, int]:
    """(prompt, completion) upper bounds over the first attempt and every re-ask (each re-ask resends the
    conversation plus the rejected answer)."""
    base = prompt_tokens_upper(request)
    out = request.max_tokens
    attempts = 1 + max_reasks
    prompt = sum(base + k * (out + 64) for k in range(attempts))
    return prompt, out * attempts


class Accounting:
    def __init__(self, prices: dict[str, Price] | None = None, budget: Budget | None = None):
        self.prices = prices or {}
        self.budget = budget
        self.usage: dict[str, dict[str, Usage]] = {}

    def record(self, stage: str, model: str, response: ChatResponse) -> None:
        self.usage.setdefault(stage, {}).setdefault(model, Usage()).add(response)

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        price = self.prices.get(model)
        if price is None:
            return None
        return (tokens_in * price.input + tokens_out * price.output) / 1e6

    def spent(self) -> tuple[int, float]:
        tokens, usd = 0, 0.0
        for per_model in self.usage.values():
            for model, u in per_model.items():
                tokens += u.tokens_in + u.tokens_out
                usd += self.cost(model, u.tokens_in, u.tokens_out) or 0.0
        return tokens, usd

    def affordable(self, model: str, upper_bounds: list[tuple[int, int]]) -> int:
        """How many of these requests (in order) fit in what is left of the budget."""
        if self.budget is None:
            return len(upper_bounds)
        if self.budget.usd is not None and model not in self.prices:
            return 0
        tokens, usd = self.spent()
        n = 0
        for tin, tout in upper_bounds:
            tokens += tin + tout
            usd += self.cost(model, tin, tout) or 0.0
            if self.budget.tokens is not None and tokens > self.budget.tokens:
                break
            if self.budget.usd is not None and usd > self.budget.usd:
                break
            n += 1
        return n

    def report(self) -> dict:
        """``{requests_sent, cache_hits, tokens_in, tokens_out, failed, cost_usd, stages: {stage: {... ,
        models: {model: {...}}}}, totals: {...}}`` (totals repeated at the top level for scripts)."""
        fields = ("requests_sent", "cache_hits", "tokens_in", "tokens_out", "failed", "attempts")

        def blank() -> dict:
            return {f: 0 for f in fields} | {"failures": {}, "cost_usd": 0.0}

        def add(into: dict, model: str, u: Usage) -> None:
            for f in fields:
                into[f] += getattr(u, f)
            for k, v in u.failures.items():
                into["failures"][k] = into["failures"].get(k, 0) + v
            c = self.cost(model, u.tokens_in, u.tokens_out)
            if c is None and u.requests_sent:
                into["cost_usd"] = None if into["cost_usd"] in (None, 0.0) else into["cost_usd"]
            elif into["cost_usd"] is not None:
                into["cost_usd"] = round(into["cost_usd"] + (c or 0.0), 6)

        totals, stages = blank(), {}
        for stage, per_model in self.usage.items():
            s = stages[stage] = blank() | {"models": {}}
            for model, u in per_model.items():
                m = s["models"][model] = blank()
                add(m, model, u)
                add(s, model, u)
                add(totals, model, u)
        tokens, usd = self.spent()
        return {
            **totals,
            "totals": dict(totals),
            "stages": stages,
            "budget": self.budget.model_dump() if self.budget else None,
            "prices": {k: v.model_dump() for k, v in self.prices.items()},
        }
