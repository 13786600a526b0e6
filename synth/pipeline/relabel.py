"""``synth relabel``: judge the negatives of an existing training set offline, then apply a policy.

Flow: read the input (``synth.formats.read_input``) -> build one ``Candidate`` per (query, negative) -> judge
them with the run's own judging code (``synth.judge.runner.CascadeRunner``: the cascade ``judges/*.yaml``,
a persistent ``VerdictStore``, LLM judges served by one ``synth.llm.pool.ClientPool``) -> apply the
policy -> write the output in the input's format, ``verdicts.parquet`` and ``report.json``.

Choices:
- A candidate is compared against its query's **first** positive (input order): the judges need one
  reference positive and the first is the one the dataset was built around (row order = mining
  order). A query without positives has nothing to compare against: its negatives are not judged
  (counted as ``negatives_without_positive``; policies keep unjudged negatives).
- Bi-encoder scores (only when the cascade has an ``embedding_margin`` stage) come from synth's
  mining provenance (``negative_scores`` / ``positive_score``) when the input has them, otherwise
  from the bundled all-MiniLM-L6-v2 (cosine, through the embedding cache).
- Verdicts persist in ``<cache_dir>/relabel/<hash of input fingerprint + cascade>/verdicts.sqlite``,
  outside the output, which is written to a temporary sibling and renamed into place only when
  complete: a killed run leaves no half-written ``--out`` and a rerun judges only what is missing.
- An ``fn_risk`` stage learns from the input itself: its passages are the corpus, its positives the
  labelled positives (``risk_context``), so its ranks and BM25 are relative to the dataset's passages.
- ``reapply`` re-runs only the policy from a previous output's ``verdicts.parquet``: no model is
  loaded and no LLM is called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from synth.core import outdir
from synth.core.errors import UserError
from synth.core.files import default_cache_dir
from synth.judge.base import Candidate
from synth.judge.policies import POLICIES, apply_policy
from synth.formats import RelabelInput, read_input, write_output
from synth.report.files import RelabelReport

log = logging.getLogger("synth.pipeline.relabel")

REPORT = "report.json"
VERDICTS = "verdicts.parquet"
BI_MODEL = "bundled:all-MiniLM-L6-v2"


def _check_policy(policy: str, cap: int | None) -> None:
    if policy not in POLICIES:
        raise UserError(f"--policy {policy}: unknown (known: {', '.join(POLICIES)})")
    if cap is not None and cap < 0:
        raise UserError("--cap must be >= 0")


def _warn_dropped(inp: RelabelInput) -> None:
    """One notice per kind of passage the reader left out (also in the report's ``input.dropped``)."""
    for reason, count in inp.dropped.items():
        what = {
            "negatives_equal_to_positive": "negatives that are their query's positive (same id and text)",
            "repeated_passages": "passages listed twice in one list (kept once)",
        }.get(reason, reason)
        log.warning("%s: dropped %d %s", inp.source, count, what)


def build_candidates(inp: RelabelInput) -> tuple[list[Candidate], int]:
    """One candidate per (query, negative), against the query's first positive; and the number of
    negatives left unjudged because their query has no positive."""
    out, skipped = [], 0
    for ex in inp.examples:
        if not ex.positives:
            skipped += len(ex.negatives)
            continue
        pos = ex.positives[0]
        for neg in ex.negatives:
            out.append(Candidate(ex.query_id, ex.query, neg.id, neg.text, pos.id, pos.text))
    return out, skipped


def input_fingerprint(candidates: list[Candidate]) -> str:
    """Content of what is judged (ids and texts), independent of file layout and scores."""
    h = hashlib.sha256()
    for c in candidates:
        for part in (c.query_id, c.doc_id, c.positive_id, c.query, c.doc, c.positive):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
    return h.hexdigest()[:24]


def add_bi_scores(inp: RelabelInput, candidates: list[Candidate], cache_dir: Path) -> tuple[list[Candidate], dict]:
    """Fill ``bi_score`` / ``positive_bi_score``: mining provenance first, the bundled embedder for the rest."""
    from dataclasses import replace

    import numpy as np

    scored, missing = [], []
    for i, c in enumerate(candidates):
        s, ps = inp.scores.get((c.query_id, c.doc_id)), inp.scores.get((c.query_id, c.positive_id))
        if s is not None and ps is not None:
            scored.append(replace(c, bi_score=s, positive_bi_score=ps))
        else:
            scored.append(c)
            missing.append(i)
    info = {"from_provenance": len(candidates) - len(missing), "embedded": len(missing), "model": None}
    if not missing:
        return scored, info
    from synth.embed import EmbedStats, Encoder, embed_texts

    encoder = Encoder(BI_MODEL, 256, 64, True, "auto")
    stats = EmbedStats()
    queries = list(dict.fromkeys(candidates[i].query for i in missing))
    docs = list(dict.fromkeys(t for i in missing for t in (candidates[i].doc, candidates[i].positive)))
    q_emb = embed_texts(encoder, queries, "", cache_dir, 4096, "relabel queries", stats)
    d_emb = embed_texts(encoder, docs, "", cache_dir, 4096, "relabel passages", stats)
    q_row = {t: r for r, t in enumerate(queries)}
    d_row = {t: r for r, t in enumerate(docs)}
    for i in missing:
        c = candidates[i]
        q = np.asarray(q_emb[q_row[c.query]])
        scored[i] = replace(
            c, bi_score=float(q @ d_emb[d_row[c.doc]]), positive_bi_score=float(q @ d_emb[d_row[c.positive]])
        )
    info.update(model=BI_MODEL, space="cosine", embedding=stats.as_dict())
    return scored, info


def risk_context(inp: RelabelInput, fp: str, cache_dir: Path, seed: int):
    """The input as a source for an ``fn_risk`` stage: its passages are the corpus, its queries the queries,
    its positives the labelled positives, embedded with the bundled MiniLM (through the embedding cache).
    Ranks and BM25 are then relative to the dataset's own passages, not to the corpus it was mined from."""
    import numpy as np

    from synth.embed import EmbedStats, Encoder, embed_texts
    from synth.index import exact_search
    from synth.judge.base import JudgeContext
    from synth.core.records import Corpus, Queries, SourceData

    texts: dict[str, str] = {}
    for ex in inp.examples:
        for p in list(ex.positives) + list(ex.negatives):
            texts.setdefault(p.id, p.text)
    data = SourceData(
        Corpus(list(texts), list(texts.values())),
        Queries([ex.query_id for ex in inp.examples], [ex.query for ex in inp.examples]),
        {ex.query_id: {p.id: 1 for p in ex.positives} for ex in inp.examples if ex.positives},
    )
    encoder, stats = Encoder(BI_MODEL, 256, 64, True, "auto"), EmbedStats()
    corpus_emb = np.asarray(embed_texts(encoder, data.corpus.texts, "", cache_dir, 4096, "relabel passages", stats))
    query_emb = np.asarray(embed_texts(encoder, data.queries.texts, "", cache_dir, 4096, "relabel queries", stats))

    def search(query_rows, k):
        rows, scores = exact_search(query_emb[np.asarray(query_rows, np.int64)], corpus_emb, k)
        return scores, rows

    n_select = max([len(ex.negatives) for ex in inp.examples] or [1]) or 1
    return JudgeContext(
        data,
        data.qrels,
        corpus_emb,
        query_emb,
        search,
        f"relabel:{fp}:{encoder.setting_key('')}",
        seed=seed,
        n_select=n_select,
        cache_dir=cache_dir,
    )


def _stage_report(result, judges) -> dict:
    rep = result.report()
    reports = {j.name: j.report() for j in judges if callable(getattr(j, "report", None))}
    for s in rep["stages"]:
        s["in"] = s["candidates"]
        s["decided"] = s["negative"] + s["false_negative"]
        s["failures"] = s["failed"]
        if s["stage"] in reports:
            s["model_report"] = reports[s["stage"]]
    return rep


def _finish(report: dict, tmp: Path, out: Path, started: float) -> RelabelReport:
    from synth.core.files import json_default
    from synth.pipeline.report import environment

    report["environment"] = environment()
    report["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    report["seconds"] = round(time.time() - started, 3)
    text = json.dumps(report, indent=2, default=json_default)
    typed = RelabelReport.model_validate(json.loads(text))  # the file as written: a key it lacks is a bug
    (tmp / REPORT).write_text(text)
    outdir.publish(tmp, out, "relabel")
    return typed


def relabel(
    input: str | Path,
    judges_path: str | Path,
    out: str | Path,
    *,
    policy: str = "drop_false_negatives",
    cap: int | None = None,
    llm=None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> RelabelReport:
    """Judge every (query, negative) of ``input`` with the cascade in ``judges_path``, apply ``policy``
    and write ``out`` (dataset/ or data.jsonl, verdicts.parquet, report.json). Returns the report."""
    from synth.judge.config import load_cascade
    from synth.llm.config import LocalConfig
    from synth.llm.pool import ClientPool

    started = time.time()
    _check_policy(policy, cap)
    judges_path = Path(judges_path)
    cascade = load_cascade(judges_path)
    cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir().resolve()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    inp, candidates, unjudged, fp = _read_candidates(input)
    timings["load"] = time.perf_counter() - t0
    out = Path(out).resolve()
    tmp = outdir.prepare(out, "relabel")
    pool = ClientPool(llm if llm is not None else LocalConfig(), cache_dir)  # LLM judges without their own llm
    runner = None
    try:
        candidates, bi_info = _with_bi_scores(inp, candidates, cascade, cache_dir, timings)
        runner = _open_runner(cascade, inp, fp, cache_dir, seed, pool)
        t0 = time.perf_counter()
        result = runner.judge_all(candidates)
        timings["judge"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts, output = _apply_and_write(inp, result, policy, cap, tmp)
        counts["negatives_without_positive"] = unjudged
        timings["write"] = time.perf_counter() - t0
        report = {
            "command": "relabel",
            "seed": seed,
            "input": {**inp.summary(), "path": _abs_source(input), "fingerprint": fp, "candidates": len(candidates)},
            "judges": _judges_section(judges_path, cascade),
            **_outcome(result, runner, counts, bi_info, pool, output, timings),
        }
        return _finish(report, tmp, out, started)
    except BaseException:
        outdir.discard(tmp)
        raise
    finally:
        if runner is not None:
            runner.close()
        pool.close()


def _with_bi_scores(inp, candidates, cascade, cache_dir: Path, timings: dict) -> tuple[list, dict | None]:
    """The candidates with bi-encoder scores when an ``embedding_margin`` stage needs them (and their info)."""
    if not any(s.kind == "embedding_margin" for s in cascade.stages):
        return candidates, None
    t0 = time.perf_counter()
    scored = add_bi_scores(inp, candidates, cache_dir)
    timings["bi_scores"] = time.perf_counter() - t0
    return scored


def _open_runner(cascade, inp, fp: str, cache_dir: Path, seed: int, pool):
    """The run's judging code (``synth.judge.runner.CascadeRunner``, as the select stage uses it), for one pass;
    its verdict store is keyed by the input's candidates and the cascade."""
    from synth.judge.runner import CascadeRunner
    from synth.llm.prompts import PromptLibrary

    state = hashlib.sha256(f"{fp}\0{cascade.model_dump_json()}".encode()).hexdigest()[:24]
    context = risk_context(inp, fp, cache_dir, seed) if any(s.kind == "fn_risk" for s in cascade.stages) else None
    return CascadeRunner(cascade, cache_dir / "relabel" / state, pool, PromptLibrary(), seed, context)


def _read_candidates(source):
    """The input, every (query, negative) candidate of it, how many negatives have no positive to judge against,
    and the candidates' fingerprint (keys the verdict store)."""
    inp = read_input(source)
    _warn_dropped(inp)
    candidates, unjudged = build_candidates(inp)
    return inp, candidates, unjudged, input_fingerprint(candidates)


def _apply_and_write(inp, result, policy: str, cap: int | None, tmp: Path) -> tuple[dict, dict]:
    """The policy over the verdicts, the relabelled data in the input's format, and ``verdicts.parquet``."""
    from synth.judge.store import write_verdicts_parquet

    verdicts = {(j.query_id, j.doc_id): j.verdict for j in result.judgements}
    examples, counts = apply_policy(inp.examples, verdicts, policy, cap)
    output = write_output(inp, examples, tmp)
    write_verdicts_parquet(result.judgements, tmp / VERDICTS)
    return counts, output


def _outcome(result, runner, counts: dict, bi_info, pool, output: dict, timings: dict) -> dict:
    """The report's sections after ``judges``: what each stage judged, what the policy did, the LLM's use, the
    written output, where the verdicts are kept, and each step's seconds."""
    return {
        "cascade": _stage_report(result, runner.judges),
        "policy": counts,
        "bi_scores": bi_info,
        "llm": pool.accounting.report(),
        "output": output,
        "state": {"verdicts_store": str(runner.store_path)},
        "stages": {k: {"seconds": round(v, 3)} for k, v in timings.items()},
    }


def _judges_section(judges_path: Path, cascade) -> dict:
    """The cascade file as given, its text, and the cascade as resolved."""
    return {
        "path": str(judges_path.resolve()),
        "name": cascade.name,
        "content": judges_path.read_text(encoding="utf-8"),
        "resolved": cascade.model_dump(mode="json"),
    }


def _abs_source(source) -> str:
    p = Path(str(source)).expanduser()
    return str(p.resolve()) if p.exists() else str(source)


def reapply(previous_out: str | Path, policy: str, cap: int | None, out: str | Path) -> RelabelReport:
    """A new policy over a previous relabel output's verdicts: no model loading, zero LLM calls."""
    from synth.judge.store import read_verdicts_parquet
    from synth.llm.accounting import Accounting

    started = time.time()
    _check_policy(policy, cap)
    prev = Path(previous_out)
    try:
        old = json.loads((prev / REPORT).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"--reapply {prev}: not a relabel output (no {REPORT})") from None
    except json.JSONDecodeError:
        raise UserError(f"--reapply {prev}: {REPORT} is not valid JSON") from None
    if not isinstance(old, dict) or old.get("command") != "relabel" or not (prev / VERDICTS).exists():
        raise UserError(f"--reapply {prev}: not a relabel output (needs a relabel {REPORT} and {VERDICTS})")
    if not isinstance(old.get("input"), dict) or not isinstance(old["input"].get("path"), str):
        raise UserError(f"--reapply {prev}: {REPORT} has no input.path (a damaged report); run relabel again")
    t0 = time.perf_counter()
    inp = read_input(old["input"]["path"])
    candidates, unjudged = build_candidates(inp)
    fp = input_fingerprint(candidates)
    if fp != old["input"].get("fingerprint"):
        raise UserError(
            f"--reapply {prev}: the input {old['input']['path']} changed since it was judged; run relabel again"
        )
    judgements = read_verdicts_parquet(prev / VERDICTS)
    verdicts = {(j.query_id, j.doc_id): j.verdict for j in judgements}
    out = Path(out).resolve()
    tmp = outdir.prepare(out, "relabel")
    try:
        examples, counts = apply_policy(inp.examples, verdicts, policy, cap)
        counts["negatives_without_positive"] = unjudged
        output = write_output(inp, examples, tmp)
        shutil.copyfile(prev / VERDICTS, tmp / VERDICTS)
        report = {
            "command": "relabel",
            "seed": old.get("seed"),
            "reapplied_from": str(prev.resolve()),
            "input": old["input"],
            "judges": old.get("judges"),
            "cascade": old.get("cascade"),
            "policy": counts,
            "bi_scores": old.get("bi_scores"),
            "llm": Accounting().report(),
            "llm_when_judged": old.get("llm"),
            "output": output,
            "state": old.get("state"),
            "stages": {"reapply": {"seconds": round(time.perf_counter() - t0, 3)}},
        }
        return _finish(report, tmp, out, started)
    except BaseException:
        outdir.discard(tmp)
        raise
