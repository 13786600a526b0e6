"""The false-negative risk judge (``fn_risk``) on a crafted source where the answer is known.

Every query j has a topic t_j and a surface s_j. Its relevant documents sit on the topic (t_j plus
a little of s_j) and share its topic words; its distractors sit on the surface only. The query says
both, so the dense ranking interleaves the two: telling them apart takes the evidence the risk model
learns from the labelled positives (similarity to them, their words).
"""

from __future__ import annotations

import numpy as np
import pytest

from synth.judge import make_judge
from synth.judge.base import Candidate, JudgeContext
from synth.judge.config import Cascade, FNRiskStage
from synth.judge.risk_features import FEATURES
from synth.core.records import Corpus, Queries, SourceData

DIM = 48


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def crafted_world(n_queries: int = 80, seed: int = 0, single_positive: bool = False, distractors: int = 12):
    """(SourceData, corpus_emb, query_emb, relevant docs per query) with 1-6 relevant docs per query
    (all labelled), or exactly one each with ``single_positive``."""
    rng = np.random.default_rng(seed)
    ids, texts, emb, qrels, relevant = [], [], [], {}, {}
    q_emb = []
    for j in range(n_queries):
        topic, surface = rng.normal(size=DIM), rng.normal(size=DIM)
        topic, surface = topic / np.linalg.norm(topic), surface / np.linalg.norm(surface)
        q_emb.append(topic + surface)
        m = 1 if single_positive else int(rng.integers(1, 7))
        rel = []
        for i in range(m):
            ids.append(f"q{j}r{i}")
            texts.append(f"topic{j} core{j} detail{j}x{i} " + " ".join(f"w{rng.integers(0, 500)}" for _ in range(8)))
            emb.append(topic + 0.45 * surface + 0.35 * rng.normal(size=DIM) / np.sqrt(DIM) * 4)
            rel.append(f"q{j}r{i}")
        for i in range(distractors):
            ids.append(f"q{j}d{i}")
            texts.append(f"surface{j} seen{j}x{i} " + " ".join(f"w{rng.integers(0, 500)}" for _ in range(8)))
            emb.append(surface + 0.25 * topic + 0.35 * rng.normal(size=DIM) / np.sqrt(DIM) * 4)
        qrels[f"q{j}"] = {d: 1 for d in rel}
        relevant[f"q{j}"] = rel
    corpus = Corpus(ids, texts)
    queries = Queries([f"q{j}" for j in range(n_queries)], [f"topic{j} surface{j} question" for j in range(n_queries)])
    return SourceData(corpus, queries, qrels), _unit(np.asarray(emb)), _unit(np.asarray(q_emb)), relevant


def exact_search(corpus_emb: np.ndarray, query_emb: np.ndarray):
    def search(query_rows, k):
        scores = np.asarray(query_emb[np.asarray(query_rows, np.int64)]) @ corpus_emb.T
        rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, rows, axis=1).astype(np.float32), rows.astype(np.int64)

    return search


def context(data, corpus_emb, query_emb, labelled=None, seed: int = 0, cache_dir=None) -> JudgeContext:
    return JudgeContext(
        data,
        labelled if labelled is not None else data.qrels,
        corpus_emb,
        query_emb,
        exact_search(corpus_emb, query_emb),
        fingerprint=f"crafted-{seed}",
        seed=seed,
        n_select=3,
        cache_dir=cache_dir,
    )


def judge_for(ctx: JudgeContext, **cfg):
    stage = Cascade.model_validate(
        {"name": "t", "stages": [{"kind": "fn_risk", "name": "risk", "folds": 3, **cfg}]}
    ).stages[0]
    return make_judge(stage, context=ctx, seed=ctx.seed)


def hide(data: SourceData, relevant: dict, every: int = 2) -> tuple[SourceData, set[tuple[str, str]]]:
    """A view whose qrels lack one of every ``every`` relevant docs of multi-relevant queries: the unlabelled
    positives the judge must find."""
    qrels, hidden = {}, set()
    for q, rel in relevant.items():
        gone = set(rel[1::every]) if len(rel) >= 2 else set()
        qrels[q] = {d: 1 for d in rel if d not in gone}
        hidden |= {(q, d) for d in gone}
    return SourceData(data.corpus, data.queries, qrels), hidden


def candidates_of(data: SourceData, corpus_emb, query_emb, depth: int = 15) -> list[Candidate]:
    """Each query's top ``depth`` non-labelled documents, against its first labelled positive."""
    out = []
    scores = query_emb @ corpus_emb.T
    for r, q in enumerate(data.queries.ids):
        labelled = list(data.qrels[q])
        pos = labelled[0]
        rows = [row for row in np.argsort(-scores[r], kind="stable").tolist() if data.corpus.ids[row] not in labelled]
        for row in rows[:depth]:
            out.append(
                Candidate(
                    q,
                    data.queries.texts[r],
                    data.corpus.ids[row],
                    data.corpus.texts[row],
                    pos,
                    data.corpus.texts[data.corpus.row_of[pos]],
                )
            )
    return out


def test_learns_unlabelled_positives_from_the_labelled_ones(tmp_path):
    data, corpus_emb, query_emb, relevant = crafted_world()
    view, hidden = hide(data, relevant)
    judge = judge_for(context(view, corpus_emb, query_emb, cache_dir=tmp_path), target_fn_ratio=0.2)
    cands = candidates_of(view, corpus_emb, query_emb)
    verdicts = judge.judge(cands)
    y = np.asarray([c.key in hidden for c in cands])
    risk = np.asarray([v.score for v in verdicts])
    from sklearn.metrics import roc_auc_score

    assert y.sum() >= 20
    assert roc_auc_score(y, risk) > 0.9  # the hidden relevant documents are found among the distractors
    # a run keeps each query's first 3 cleared candidates down its ranking: far fewer of them are unlabelled
    # relevant documents than the first 3 candidates are
    first, kept = {}, {}
    for c, v in zip(cands, verdicts):
        if len(first.setdefault(c.query_id, [])) < 3:
            first[c.query_id].append(c.key in hidden)
        if v.verdict == "negative" and len(kept.setdefault(c.query_id, [])) < 3:
            kept[c.query_id].append(c.key in hidden)
    fn_first = np.mean([x for v in first.values() for x in v])
    fn_kept = np.mean([x for v in kept.values() for x in v])
    assert fn_first > 0.2 and fn_kept < 0.6 * fn_first
    report = judge.report()
    assert report["mode"] == "learned" and report["fitted"] and report["heldout"]["auc"] > 0.8
    assert report["features"] == list(FEATURES) and report["hidden_positives"] >= report["min_hidden"]
    # calibrated: held-out predicted and observed rates agree within a few points in every bin
    assert all(abs(b["predicted"] - b["observed"]) < 0.08 for b in report["heldout"]["calibration"])
    est = report["estimate"]
    assert 0 < report["threshold"] < 1 and est["fn_ratio"] <= 0.2 and est["reachable"]
    assert est["oracle_mean_rank"] <= est["mean_rank"] and est["rank_vs_oracle"] >= 1
    assert "estimated FN" in report["summary"] and "hardness limit" in report["summary"]
    # the report is kept beside the store: a judge that fits nothing (a stored rerun) still reports it
    again = judge_for(context(view, corpus_emb, query_emb, cache_dir=tmp_path), target_fn_ratio=0.2)
    assert again.report() == report


def test_planted_near_copies_of_a_positive_are_flagged():
    """Ten unlabelled corpus documents that copy a query's positive with one word changed are flagged as
    near-copies; an LLM-written text the run has no embedder for is not scored at all (fail closed)."""
    data, corpus_emb, query_emb, relevant = crafted_world(n_queries=40)
    rng = np.random.default_rng(1)
    ids, texts, rows = list(data.corpus.ids), list(data.corpus.texts), [corpus_emb]
    for q in data.queries.ids[:10]:
        pos = relevant[q][0]
        words = data.corpus.texts[data.corpus.row_of[pos]].split()
        ids.append(f"copy-{q}")
        texts.append(" ".join(words[:-1] + ["changed"]))  # one word of ten differs
        rows.append(_unit(corpus_emb[data.corpus.row_of[pos]] + 0.05 * rng.normal(size=DIM))[None, :])
    data = SourceData(Corpus(ids, texts), data.queries, data.qrels)
    corpus_emb = np.concatenate(rows)
    judge = judge_for(context(data, corpus_emb, query_emb))
    cands = []
    for r, q in enumerate(data.queries.ids[:10]):
        pos = relevant[q][0]
        ptext = data.corpus.texts[data.corpus.row_of[pos]]
        for doc in (f"copy-{q}", f"{q}d0"):
            cands.append(
                Candidate(q, data.queries.texts[r], doc, data.corpus.texts[data.corpus.row_of[doc]], pos, ptext)
            )
        cands.append(Candidate(q, data.queries.texts[r], f"sn-{q}", "an LLM-written passage", pos, ptext))
    verdicts = judge.judge(cands)
    by_doc = {c.doc_id: v for c, v in zip(cands, verdicts)}
    for q in data.queries.ids[:10]:
        copy = by_doc[f"copy-{q}"]
        assert copy.verdict == "false_negative" and copy.score == 1.0 and "near-copy" in copy.detail
        assert by_doc[f"sn-{q}"].verdict == "uncertain" and by_doc[f"sn-{q}"].failed
    assert sum(by_doc[f"{q}d0"].verdict == "negative" for q in data.queries.ids[:10]) >= 8


def test_cross_fitting_never_scores_a_query_with_a_model_that_saw_its_positives():
    data, corpus_emb, query_emb, relevant = crafted_world()
    judge = judge_for(context(data, corpus_emb, query_emb))
    cands = candidates_of(data, corpus_emb, query_emb, depth=5)
    verdicts = judge.judge(cands)
    fit = judge._ensure_fit()
    trained_on = fit["trained_queries"]
    q_row = data.queries.row_of
    for q in data.queries.ids:
        f = judge.fold(data.queries.texts[q_row[q]])
        assert q_row[q] not in trained_on[f]  # its own fold's model never saw it ...
        if len(relevant[q]) >= 2:  # ... and every other fold's model learned from it
            assert all(q_row[q] in trained_on[g] for g in trained_on if g != f)
    # the score a candidate gets is the prediction of the model of its query's fold (not of a model fitted on all)
    first = cands[0]
    row = q_row[first.query_id]
    model = fit["models"][judge.fold(data.queries.texts[row])]
    b = judge.builder()
    view = b.views([row])[row]
    positives = b.corpus_passages(view, np.asarray([data.corpus.row_of[d] for d in data.qrels[first.query_id]]))
    cand = b.corpus_passages(view, np.asarray([data.corpus.row_of[first.doc_id]]))
    expected = model.predict_proba(b.matrix(view, cand, positives))[0, 1]
    assert verdicts[0].model == "fn_risk:logistic"
    assert verdicts[0].score == pytest.approx(expected)


def test_same_seed_same_verdicts_other_seed_other_folds():
    data, corpus_emb, query_emb, relevant = crafted_world(n_queries=60)
    cands = candidates_of(data, corpus_emb, query_emb, depth=5)
    a = [(v.verdict, v.score) for v in judge_for(context(data, corpus_emb, query_emb, seed=3)).judge(cands)]
    b = [(v.verdict, v.score) for v in judge_for(context(data, corpus_emb, query_emb, seed=3)).judge(cands)]
    c = [(v.verdict, v.score) for v in judge_for(context(data, corpus_emb, query_emb, seed=4)).judge(cands)]
    assert a == b
    assert a != c


def test_a_source_with_no_multi_positive_query_falls_back_to_the_margin_guard_and_says_so():
    data, corpus_emb, query_emb, _ = crafted_world(single_positive=True)
    judge = judge_for(context(data, corpus_emb, query_emb))
    cands = candidates_of(data, corpus_emb, query_emb, depth=5)
    verdicts = judge.judge(cands)
    report = judge.report()
    assert report["mode"] == "fallback" and not report["fitted"]
    assert report["why"] == "no labelled query has two or more positives in the corpus"
    assert report["fallback"] == {"kind": "perc", "p": 0.95}
    assert report["summary"] == f"fell back to the positive-aware perc filter (p 0.95): {report['why']}"
    assert report["notices"] == [f"fn_risk risk: {report['summary']}"]
    # NV-Retriever's TopK-PercPos, against the query's (best) labelled positive, by brute force
    q_row, d_row = data.queries.row_of, data.corpus.row_of
    for c, v in zip(cands, verdicts):
        q = query_emb[q_row[c.query_id]]
        s = float(corpus_emb[d_row[c.doc_id]] @ q)
        best = max(float(corpus_emb[d_row[p]] @ q) for p in data.qrels[c.query_id])
        assert v.verdict == ("false_negative" if s > best - 0.05 * abs(best) else "negative")
        assert v.model == "fn_risk:fallback:perc" and v.score == pytest.approx(s - best, abs=1e-5)
    assert {v.verdict for v in verdicts} == {"negative", "false_negative"}


def test_too_little_support_falls_back_and_the_report_says_why():
    """A few multi-positive queries: fewer hidden positives than the model needs (5 per feature)."""
    data, corpus_emb, query_emb, relevant = crafted_world(n_queries=6)
    judge = judge_for(context(data, corpus_emb, query_emb))
    verdicts = judge.judge(candidates_of(data, corpus_emb, query_emb, depth=3))
    report = judge.report()
    assert report["mode"] == "fallback" and report["min_hidden"] == 5 * len(FEATURES)
    assert report["hidden_positives"] < report["min_hidden"]
    assert f"learning needs {report['min_hidden']} (5 per feature)" in report["why"]
    assert "fell back" in report["notices"][0]
    assert all(v.verdict in ("negative", "false_negative") and not v.failed for v in verdicts)
    # a smaller source still learns when told it may (min_hidden), and says when the replay is too thin
    small = judge_for(context(*crafted_world(n_queries=14)[:3]), min_hidden=10, target_fn_ratio=0.05)
    small.judge(candidates_of(*crafted_world(n_queries=14)[:3], depth=3))
    rep = small.report()
    assert rep["mode"] == "learned" and rep["target_used"] > 0.05 and "too few to estimate 0.05x" in rep["why"]
    assert any("the least this source supports" in line for line in rep["notices"])


def test_an_old_cascade_setting_gets_a_line_saying_what_replaced_it():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="target_fn_rate was replaced by target_fn_ratio"):
        Cascade.model_validate({"name": "t", "stages": [{"kind": "fn_risk", "target_fn_rate": 0.02}]})


def test_fn_risk_needs_the_run_context():
    from synth.core.errors import UserError

    stage = FNRiskStage(name="risk")
    with pytest.raises(UserError, match="learns from a run's source"):
        make_judge(stage)


def test_an_llm_written_passage_is_scored_like_the_corpus_document_it_copies():
    """Outside texts (synthetic negatives) go through the same features: a passage whose text and embedding
    equal a corpus document's gets that document's risk, in a batch that mixes both kinds."""
    data, corpus_emb, query_emb, relevant = crafted_world()
    view, hidden = hide(data, relevant)
    row_of_text = {t: r for r, t in enumerate(data.corpus.texts)}

    def embed_passages(texts):  # the run's embedder, here the crafted embedding of the text it copies
        return np.stack([corpus_emb[row_of_text[t]] for t in texts])

    ctx = context(view, corpus_emb, query_emb)
    ctx.embed_passages = embed_passages
    judge = judge_for(ctx)
    cands = candidates_of(view, corpus_emb, query_emb, depth=6)
    outside = [Candidate(c.query_id, c.query, f"llm-{c.doc_id}", c.doc, c.positive_id, c.positive) for c in cands[::3]]
    verdicts = judge.judge(cands + outside)
    assert judge.report()["mode"] == "learned"
    by_key = {c.doc_id: v for c, v in zip(cands + outside, verdicts)}
    for c in outside:
        twin = by_key[c.doc_id.removeprefix("llm-")]
        assert by_key[c.doc_id].verdict == twin.verdict and by_key[c.doc_id].score == pytest.approx(twin.score)
