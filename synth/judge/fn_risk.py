"""``fn_risk``: a false-negative detector that needs no external model (positive-unlabelled learning).

The labelled positives of a source are a sample of all its relevant documents. Hide part of them
again and the hidden ones sit among the other candidates of their query exactly where unlabelled
positives sit; a classifier that learns to find them there scores how likely any candidate is an
unlabelled positive.

- Training set (nested hiding): for every labelled query with at least 2 positives, a seeded
  ``hide_fraction`` of them is hidden (at least 1 hidden, 1 kept); its candidates are the query's
  top ``depth`` dense ranks minus the kept positives; label 1 = a hidden positive. Features
  (``risk_features``) are measured against the kept positives only.
- Single-positive sources: when that set holds fewer than ``min_hidden`` hidden positives, the
  model drops the positive-side features and learns from every labelled query instead, hiding a
  single positive whole. The report says which mode ran and why. Either way the model is learned
  across queries, so it scores single-positive queries too.
- Cross-fitting: queries fall into ``folds`` folds by a seeded hash of their normalised text
  (queries with one text share a fold); a query is scored only by the model trained on the other
  folds, in training and in judging alike.
- Learner: scikit-learn's ``LogisticRegression`` on standardised features, fitted by log-loss, so
  its output is a probability (the report holds its held-out calibration).
- Cut-off: no constant. On the held-out folds the judge replays the selection a run makes (down
  each query's ranking, keep the first ``n`` candidates under the cut-off) and takes the highest
  cut-off below which the kept candidates' false-negative rate stays within ``target_fn_rate``.
- A near-copy of a labelled positive (token-set Jaccard >= ``near_copy_jaccard``) is flagged with
  risk 1 whatever the model says.

Verdicts: risk >= cut-off -> ``false_negative``, else ``negative``. ``escalate_below`` sends the
flags the model is less sure of (risk below it) to the next stage as ``uncertain``; ``decides:
[negative]`` sends every flag there. A candidate whose query the run does not know is
``uncertain`` (fail closed). The fit runs lazily, on the first candidate that is not in the verdict
store, and its report is kept beside the store, so a stored rerun fits nothing and still reports.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Sequence

import numpy as np

from synth.core.files import atomic_write_json, read_json
from synth.core.errors import UserError
from synth.judge import fingerprint_of, restrict
from synth.judge.base import Candidate, JudgeContext, StageVerdict
from synth.judge.config import FNRiskStage
from synth.judge.lexical import Lexical
from synth.core.text import normal_text
from synth.judge.risk_features import (
    POSITIVE_FEATURES,
    QUERY_FEATURES,
    FeatureBuilder,
    Passages,
    jaccard_matrix,
    near_copies,
)

log = logging.getLogger("synth.judge.fn_risk")

VERSION = 1  # bump when features or the fit change: stored verdicts of older fits are not reused


def n_hidden(m: int, fraction: float) -> int:
    """How many of ``m`` positives to hide: ``floor(fraction * m)`` clamped to [1, m - 1] (a half of 3
    hides 1; this reproduces MEASURING.md's anchor figures), and a single positive whole. The probe
    (``synth.evaluate.fn_probe``) hides by the same rule."""
    return 1 if m == 1 else min(m - 1, max(1, int(math.floor(fraction * m))))


class FNRiskJudge:
    kind = "fn_risk"

    def __init__(self, cfg: FNRiskStage, *, context: JudgeContext | None = None, **_context):
        if context is None:
            raise UserError(
                f"judge stage {cfg.name or cfg.kind!r}: fn_risk learns from a run's source and "
                "embeddings; use it in `synth run` / `synth fn-probe` recipes"
            )
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self.ctx = context
        self._fp: str | None = None
        self._fit: dict | None = None  # models, threshold, mode: set by _ensure_fit
        self._report: dict | None = None
        self._builder: FeatureBuilder | None = None

    # -- identity and report --------------------------------------------------------------------------
    def fingerprint(self) -> str:
        if self._fp is None:
            c = self.cfg
            self._fp = fingerprint_of(
                kind=self.kind,
                version=VERSION,
                target=c.target_fn_rate,
                folds=c.folds,
                escalate_below=c.escalate_below,
                depth=c.depth,
                hide=c.hide_fraction,
                min_hidden=c.min_hidden,
                max_train=c.max_train_queries,
                near=c.near_copy_jaccard,
                C=c.regularization,
                decides=sorted(c.decides),
                data=self.ctx.fingerprint,
                seed=self.ctx.seed,
                n_select=self.ctx.n_select,
            )
        return self._fp

    def _report_path(self):
        cache = self.ctx.cache_dir
        return None if cache is None else cache / "judge" / f"fn-risk-{self.fingerprint()}.json"

    def report(self) -> dict | None:
        """The fit's figures (mode, training set, held-out AUC and calibration, cut-off, estimated FN
        rate): from this process's fit, or from the file an earlier run left beside the store."""
        if self._report is not None:
            return self._report
        path = self._report_path()
        if path is None or not path.exists():
            return None
        report = read_json(path)  # a damaged file warns and is refitted, which writes it anew
        if report is None:
            self._ensure_fit()
        return report if report is not None else self._report

    # -- fitting --------------------------------------------------------------------------------------
    def fold(self, query_text: str) -> int:
        from synth.core.seeding import stable_key

        return stable_key(str(self.ctx.seed), "fn-risk-fold", normal_text(query_text)) % self.cfg.folds

    def builder(self) -> FeatureBuilder:
        if self._builder is None:
            ctx = self.ctx
            self._builder = FeatureBuilder(
                ctx.corpus_emb,
                ctx.query_emb,
                Lexical(ctx.data.corpus.texts),
                ctx.data.queries.texts,
                ctx.search,
                self.cfg.depth,
            )
        return self._builder

    def training_queries(self) -> dict[int, list[int]]:
        """query row -> corpus rows of its labelled positives (qrels order), capped at
        ``max_train_queries`` by a seeded order."""
        from synth.core.seeding import stable_key

        data = self.ctx.data
        q_row, d_row = data.queries.row_of, data.corpus.row_of
        out = {}
        for qid, docs in self.ctx.labelled.items():
            rows = [d_row[d] for d, g in docs.items() if g > 0 and d in d_row]
            if rows and qid in q_row:
                out[q_row[qid]] = list(dict.fromkeys(rows))
        if len(out) > self.cfg.max_train_queries:
            keep = sorted(out, key=lambda r: stable_key(str(self.ctx.seed), "fn-risk-train", data.queries.ids[r]))
            out = {r: out[r] for r in sorted(keep[: self.cfg.max_train_queries])}
        return out

    def construct(self, queries: dict[int, list[int]], full: bool) -> dict:
        """The nested-hiding training set: feature rows, labels, and per row its query (in rank order
        within a query) and rank; ``full`` uses multi-positive queries and the positive-side features."""
        from synth.core.seeding import seeded_subset

        cfg, b, data = self.cfg, self.builder(), self.ctx.data
        chosen = {q: rows for q, rows in queries.items() if len(rows) >= (2 if full else 1)}
        extra = min(max((len(r) for r in chosen.values()), default=0), 1000)
        views = b.views(list(chosen), extra=extra)
        xs, ys, qs, ranks = [], [], [], []
        for qr, pos in chosen.items():
            hidden = set(
                seeded_subset(
                    self.ctx.seed, data.queries.ids[qr], pos, n_hidden(len(pos), cfg.hide_fraction), "fn-risk-hide"
                )
            )
            kept = [r for r in pos if r not in hidden]
            view = views[qr]
            excluded = set(kept)
            position = [(i, r) for i, r in enumerate(view.top_rows.tolist()) if r not in excluded][: cfg.depth]
            if not position:
                continue
            cand_rows = np.asarray([r for _, r in position], np.int64)
            cand = b.corpus_passages(view, cand_rows)
            pos_passages = b.corpus_passages(view, np.asarray(kept, np.int64)) if full else None
            xs.append(b.matrix(view, cand, pos_passages))
            ys.append(np.isin(cand_rows, list(hidden)))
            qs.append(np.full(len(cand_rows), qr, np.int64))
            ranks.append(np.asarray([i + 1 for i, _ in position], np.int64))
        n_feat = len(QUERY_FEATURES) + (len(POSITIVE_FEATURES) if full else 0)
        return {
            "X": np.concatenate(xs) if xs else np.zeros((0, n_feat)),
            "y": _cat(ys, bool),
            "query": _cat(qs, np.int64),
            "rank": _cat(ranks, np.int64),
            "queries": len(xs),
        }

    def _new_model(self):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=self.cfg.regularization, max_iter=2000))

    def _ensure_fit(self) -> dict:
        if self._fit is not None:
            return self._fit
        t0 = time.perf_counter()
        cfg = self.cfg
        queries = self.training_queries()
        full_set = self.construct(queries, full=True)
        n_full_hidden = int(full_set["y"].sum())
        if n_full_hidden >= cfg.min_hidden:
            mode, train, why = (
                "full",
                full_set,
                (
                    f"{n_full_hidden} hidden positives among the candidates of "
                    f"{full_set['queries']} multi-positive queries"
                ),
            )
        else:
            mode, train = "query_only", self.construct(queries, full=False)
            why = (
                f"only {n_full_hidden} hidden positives from queries with 2+ labelled positives (min_hidden "
                f"{cfg.min_hidden}): positive-side features are not learned; the model ranks candidates by "
                f"query-side features, learned by hiding the positives of {train['queries']} queries"
            )
        fold_of_query = {qr: self.fold(self.ctx.data.queries.texts[qr]) for qr in np.unique(train["query"]).tolist()}
        folds = np.asarray([fold_of_query[q] for q in train["query"].tolist()], np.int64)
        X, y = train["X"], train["y"]
        models: dict[int, object] = {}
        trained_queries: dict[int, frozenset[int]] = {}
        oof = np.full(len(y), np.nan)
        problem = None
        for f in range(cfg.folds):
            fit_rows = folds != f
            if y[fit_rows].sum() < 2 or (~y[fit_rows]).sum() < 2:
                problem = (
                    f"fold {f}: {int(y[fit_rows].sum())} hidden positives to learn from; the source has "
                    f"too few labelled positives for {cfg.folds} folds"
                )
                break
            models[f] = self._new_model().fit(X[fit_rows], y[fit_rows])
            trained_queries[f] = frozenset(np.unique(train["query"][fit_rows]).tolist())
            if (~fit_rows).any():
                oof[~fit_rows] = models[f].predict_proba(X[~fit_rows])[:, 1]
        features = list(QUERY_FEATURES) + (list(POSITIVE_FEATURES) if mode == "full" else [])
        report = {
            "mode": mode,
            "why": why,
            "features": features,
            "training_queries": train["queries"],
            "training_candidates": int(len(y)),
            "hidden_positives": int(y.sum()),
            "folds": cfg.folds,
            "depth": cfg.depth,
            "target_fn_rate": cfg.target_fn_rate,
            "n_select": self.ctx.n_select,
        }
        if problem is not None:
            report.update(fitted=False, problem=problem)
            self._fit = {"models": None, "threshold": None, "mode": mode, "problem": problem}
        else:
            threshold, estimate = choose_threshold(
                oof, y, train["query"], train["rank"], self.ctx.n_select, cfg.target_fn_rate
            )
            report.update(
                fitted=True,
                heldout=heldout_quality(oof, y),
                threshold=threshold,
                estimate=estimate,
                coefficients=_coefficients(models, report["features"]),
            )
            self._fit = {
                "models": models,
                "threshold": threshold,
                "mode": mode,
                "problem": None,
                "trained_queries": trained_queries,
            }
        report["fit_seconds"] = round(time.perf_counter() - t0, 3)
        self._report = report
        log.info(
            "fn_risk %s: %s; %s",
            self.name,
            mode,
            json.dumps(
                {
                    k: report.get(k)
                    for k in ("training_queries", "hidden_positives", "threshold", "heldout", "estimate")
                },
                default=str,
            ),
        )
        path = self._report_path()
        if path is not None:
            atomic_write_json(path, report)
        return self._fit

    # -- judging --------------------------------------------------------------------------------------
    def judge(self, candidates: Sequence[Candidate]) -> list[StageVerdict]:
        if not candidates:
            return []
        fit = self._ensure_fit()
        out: list[StageVerdict | None] = [None] * len(candidates)
        if fit["models"] is None:
            return [
                StageVerdict("uncertain", detail=f"risk model not fitted: {fit['problem']}", failed=True)
                for _ in candidates
            ]
        data, b = self.ctx.data, self.builder()
        q_row, d_row = data.queries.row_of, data.corpus.row_of
        by_query: dict[str, list[int]] = {}
        for i, c in enumerate(candidates):
            if c.query_id in q_row:
                by_query.setdefault(c.query_id, []).append(i)
            else:
                out[i] = StageVerdict("uncertain", detail="query unknown to the run", failed=True)
        outside = list(dict.fromkeys(c.doc for c in candidates if c.doc_id not in d_row))
        outside_emb = self._embed_outside(outside)
        for qid, idx in list(by_query.items()):
            blind = [i for i in idx if candidates[i].doc_id not in d_row and candidates[i].doc not in outside_emb]
            for i in blind:  # an outside text the run cannot embed cannot be scored: fail closed
                out[i] = StageVerdict(
                    "uncertain", detail="not a corpus document and no embedder to score it", failed=True
                )
            by_query[qid] = [i for i in idx if i not in set(blind)]
        views = b.views([q_row[q] for q in by_query])
        model_name = f"fn_risk:logistic:{fit['mode']}"
        for qid, idx in by_query.items():
            view = views[q_row[qid]]
            if not idx:
                continue
            pos_ids = self._positive_ids(qid, candidates[idx[0]])
            positives = b.corpus_passages(view, np.asarray([d_row[d] for d in pos_ids], np.int64))
            cand = self._passages(view, [candidates[i] for i in idx], outside_emb)
            if not len(positives) and fit["mode"] == "full":
                for i in idx:
                    out[i] = StageVerdict("uncertain", detail="no labelled positive in the corpus", failed=True)
                continue
            jac = jaccard_matrix(cand, positives)  # once: a feature and the near-copy rule
            X = b.matrix(view, cand, positives if fit["mode"] == "full" else None, jac)
            risk = fit["models"][self.fold(data.queries.texts[q_row[qid]])].predict_proba(X)[:, 1]
            copies = near_copies(jac, self.cfg.near_copy_jaccard)
            for j, i in enumerate(idx):
                r, t = float(risk[j]), fit["threshold"]
                if copies[j] >= 0:
                    r = 1.0
                    detail = f"near-copy of positive {pos_ids[copies[j]]}"
                else:
                    detail = f"risk {r:.4f} {'>=' if r >= t else '<'} cut-off {t:.4f}"
                verdict = "negative" if r < t else "false_negative"
                if verdict == "false_negative" and self.cfg.escalate_below is not None and r < self.cfg.escalate_below:
                    verdict, detail = "uncertain", f"{detail}, below escalate_below {self.cfg.escalate_below:g}"
                verdict, detail = restrict(verdict, self.cfg.decides, detail)
                out[i] = StageVerdict(verdict, r, model_name, detail=detail)
        return out  # type: ignore[return-value]

    def _positive_ids(self, query_id: str, candidate: Candidate) -> list[str]:
        """The query's labelled positives in the corpus; the candidate's own positive when it has none."""
        d_row = self.ctx.data.corpus.row_of
        labelled = [d for d, g in self.ctx.data.qrels.get(query_id, {}).items() if g > 0 and d in d_row]
        return labelled or ([candidate.positive_id] if candidate.positive_id in d_row else [])

    def _embed_outside(self, texts: list[str]) -> dict[str, np.ndarray]:
        if not texts or self.ctx.embed_passages is None:
            return {}
        emb = np.asarray(self.ctx.embed_passages(texts), np.float32)
        return {t: emb[i] for i, t in enumerate(texts)}

    def _passages(self, view, cands: list[Candidate], outside_emb: dict) -> Passages:
        """The candidates of one query as ``Passages``, corpus rows and (embedded) outside texts alike."""
        b, d_row = self.builder(), self.ctx.data.corpus.row_of
        inside = [j for j, c in enumerate(cands) if c.doc_id in d_row]
        other = [j for j, c in enumerate(cands) if c.doc_id not in d_row]
        parts = [(inside, b.corpus_passages(view, np.asarray([d_row[cands[j].doc_id] for j in inside], np.int64)))]
        if other:
            texts = [cands[j].doc for j in other]
            parts.append((other, b.outside_passages(view, texts, np.stack([outside_emb[t] for t in texts]))))
        emb = np.zeros((len(cands), self.ctx.corpus_emb.shape[1]), np.float32)
        bm25 = np.zeros(len(cands), np.float32)
        tokens: list[frozenset] = [frozenset()] * len(cands)
        for where, p in parts:
            emb[where], bm25[where] = p.emb, p.bm25
            for j, t in zip(where, p.tokens):
                tokens[j] = t
        return Passages(emb, bm25, tokens)


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def choose_threshold(
    risk: np.ndarray, hidden: np.ndarray, query: np.ndarray, rank: np.ndarray, n: int, target: float
) -> tuple[float, dict]:
    """The highest cut-off t such that, replaying a run's selection on held-out queries (down each
    query's ranking, keep the first ``n`` candidates with risk < t), the kept candidates' share of
    hidden positives stays <= ``target`` for every cut-off up to t. Returns t and the estimate there."""
    order = np.lexsort((rank, query))
    risk, hidden, query, rank = risk[order], hidden[order], query[order], rank[order]
    _, start, counts = np.unique(query, return_index=True, return_counts=True)
    width = int(counts.max()) if len(counts) else 0
    R = np.full((len(counts), width), np.inf)
    Y = np.zeros((len(counts), width), bool)
    K = np.zeros((len(counts), width), np.int64)
    for i, (s, c) in enumerate(zip(start.tolist(), counts.tolist())):
        R[i, :c], Y[i, :c], K[i, :c] = risk[s : s + c], hidden[s : s + c], rank[s : s + c]
    finite = risk[np.isfinite(risk)]
    grid = np.unique(
        np.concatenate([np.quantile(finite, np.linspace(0, 1, 1001)) if len(finite) else [], [1.0 + 1e-9]])
    )

    def replay(t: float) -> dict:
        allowed = R < t
        chosen = allowed & (np.cumsum(allowed, axis=1) <= n)
        kept = int(chosen.sum())
        return {
            "cutoff": float(t),
            "fn_rate": float((chosen & Y).sum()) / kept if kept else 0.0,
            "kept": kept,
            "mean_rank": float(K[chosen].mean()) if kept else None,
            "queries_short_within_depth": int((chosen.sum(axis=1) < n).sum()),
            "queries": len(counts),
        }

    best = replay(float(grid[0]))
    for t in grid[1:]:
        r = replay(float(t))
        if r["fn_rate"] > target:
            break
        best = r
    return best["cutoff"], best


def heldout_quality(oof: np.ndarray, y: np.ndarray) -> dict:
    """Cross-fitted AUC of the risk on the hidden positives, and its calibration (10 equal-count bins)."""
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(oof)
    p, t = oof[ok], y[ok]
    out: dict = {
        "candidates": int(ok.sum()),
        "hidden_positives": int(t.sum()),
        "auc": float(roc_auc_score(t, p)) if 0 < t.sum() < len(t) else None,
    }
    if len(p):
        bins = np.array_split(np.argsort(p, kind="stable"), min(10, len(p)))
        rows = [(float(p[b].mean()), float(t[b].mean()), len(b)) for b in bins if len(b)]
        out["calibration"] = [{"predicted": round(a, 5), "observed": round(o, 5), "candidates": c} for a, o, c in rows]
        out["ece"] = float(sum(c * abs(a - o) for a, o, c in rows) / len(p))
    return out


def _coefficients(models: dict, names: list[str]) -> dict[str, float]:
    """Mean standardised coefficient per feature over the fold models (sign: + = more likely relevant)."""
    coefs = np.mean([m[-1].coef_[0] for m in models.values()], axis=0)
    return {n: round(float(c), 4) for n, c in zip(names, coefs)}
