"""``fn_risk``: a false-negative detector that needs no external model (positive-unlabelled learning).

The labelled positives of a source are a sample of all its relevant documents. Hide some of them
again and the hidden ones sit among the other candidates of their query exactly where unlabelled
positives sit; a classifier that learns to find them there scores how likely any candidate is an
unlabelled positive.

- Training set and model (``synth.judge.risk_model``): replicates of every query with two or more
  labelled positives, one group of its positives hidden at a time; features (``risk_features``) are
  measured against the known positives; a logistic regression, cross-fitted by query (no query is
  scored by a model that saw its positives, in training and in judging alike).
- Cut-off (``synth.judge.operating_point``): no constant. The held-out folds replay the selection the
  run makes (down each ranking, backfill included, keep the first n candidates under the cut-off), and
  the cut-off is the highest whose smoothed false-negative rate is within ``target_fn_ratio`` x the
  plain top-n's. The report gives the estimate with its interval and its hardness beside the oracle's.
- Too little support, said in one line (report, card, CLI), never silently:
  - a replay with too few hidden positives in the unjudged top-n to estimate the target (it would rest
    on fewer than 5 expected false negatives) aims at the least target it can estimate instead;
  - fewer hidden positives than ``min_hidden`` (5 per feature), a fold with nothing to learn, or a
    replay with fewer than 5 hidden positives in its top-n at all: the stage falls back to what the
    positive-aware ``fallback`` filter rejects (NV-Retriever's TopK-PercPos at 0.95 of the query's best
    labelled positive by default). Single-positive sources (SciFact, MS MARCO) land here: with one
    positive per query there is nothing to hide and learn from.
- A near-copy of a labelled positive (term-set Jaccard >= ``near_copy_jaccard``) is flagged with
  risk 1 whatever the model says, in both modes.

What it cannot see: it learns from labelled positives only, so an unlabelled relevant document that
looks like none of them, or one ranked above every positive, is as invisible to it as to the probe.

Verdicts: risk >= cut-off -> ``false_negative``, else ``negative``. ``escalate_below`` sends the
flags the model is less sure of (risk below it; every fallback flag) to the next stage as
``uncertain``; ``decides: [negative]`` sends every flag there. A candidate whose query the run does
not know is ``uncertain`` (fail closed). The fit runs lazily, on the first candidate that is not in
the verdict store, and its report is kept beside the store, so a stored rerun fits nothing and still
reports.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from synth.core.errors import UserError
from synth.core.files import atomic_write_json, read_json
from synth.core.seeding import stable_key
from synth.core.text import normal_text
from synth.judge import fingerprint_of, restrict
from synth.judge.base import Candidate, JudgeContext, StageVerdict
from synth.judge.config import FNRiskStage
from synth.judge.lexical import Lexical
from synth.judge.operating_point import choose_cutoff, supported_target
from synth.judge.risk_features import FEATURES, FeatureBuilder, Passages, near_copies
from synth.judge.risk_model import build_training_set, coefficients, cross_fit, held_out

log = logging.getLogger("synth.judge.fn_risk")

VERSION = 2  # bump when features or the fit change: stored verdicts of older fits are not reused
MAX_REPLAY_DEPTH = 1000  # the replay follows selection down the ranking this far at most
EVENTS_PER_FEATURE = 5  # events per variable of a logistic regression: 5-9 suffice (Vittinghoff & McCulloch, 2007)


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
                settings=c.model_dump(mode="json", exclude={"name"}),
                data=self.ctx.fingerprint,
                seed=self.ctx.seed,
                n_select=self.ctx.n_select,
                replay_depth=self.replay_depth(),
            )
        return self._fp

    def _report_path(self):
        cache = self.ctx.cache_dir
        return None if cache is None else cache / "judge" / f"fn-risk-{self.fingerprint()}.json"

    def report(self) -> dict | None:
        """The fit's figures (mode, training set, held-out AUC and calibration, cut-off, the replay's
        estimate): from this process's fit, or from the file an earlier run left beside the store."""
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
        return stable_key(str(self.ctx.seed), "fn-risk-fold", normal_text(query_text)) % self.cfg.folds

    def replay_depth(self) -> int:
        """How far the replay follows selection down a ranking: the run's backfill depth, at least the
        model's own depth, at most ``MAX_REPLAY_DEPTH`` and the corpus."""
        depth = max(self.ctx.select_depth, self.cfg.depth)
        return min(depth, MAX_REPLAY_DEPTH, len(self.ctx.corpus_emb))

    def min_hidden(self) -> int:
        return self.cfg.min_hidden or EVENTS_PER_FEATURE * len(FEATURES)

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

    def _ensure_fit(self) -> dict:
        if self._fit is not None:
            return self._fit
        t0 = time.perf_counter()
        cfg = self.cfg
        multi = {q: rows for q, rows in self.training_queries().items() if len(rows) >= 2}
        report: dict = {
            "features": list(FEATURES),
            "training_queries": len(multi),
            "folds": cfg.folds,
            "depth": cfg.depth,
            "replay_depth": self.replay_depth(),
            "target_fn_ratio": cfg.target_fn_ratio,
            "n_select": self.ctx.n_select,
            "min_hidden": self.min_hidden(),
        }
        fit, why = self._learn(multi, report)
        if fit is not None:
            loosened = [f"fn_risk {self.name}: {why}"] if why else []
            report.update(mode="learned", fitted=True, why=why)
            report["summary"] = summary(report)
            report["notices"] = loosened + _notices(report)
        else:
            fit = {"models": None, "threshold": None}
            report.update(mode="fallback", fitted=False, why=why, fallback=cfg.fallback.model_dump(mode="json"))
            report["summary"] = summary(report)
            report["notices"] = [f"fn_risk {self.name}: {report['summary']}"]
        report["fit_seconds"] = round(time.perf_counter() - t0, 3)
        fit["mode"] = report["mode"]
        self._fit, self._report = fit, report
        log.info("fn_risk %s: %s", self.name, report["summary"])  # the CLI prints the notices at the end
        path = self._report_path()
        if path is not None:
            atomic_write_json(path, report)
        return self._fit

    def _learn(self, multi: dict[int, list[int]], report: dict) -> tuple[dict | None, str]:
        """The cross-fitted models and their cut-off (with what was loosened, if anything), or None and why
        the source cannot support them. Fills ``report`` with the training set, quality and estimate."""
        cfg, ctx, n = self.cfg, self.ctx, self.ctx.n_select
        if not multi:
            return None, "no labelled query has two or more positives in the corpus"
        ts = build_training_set(
            self.builder(), multi, ctx.data.queries.ids, ctx.seed, cfg.hide_groups, self.replay_depth()
        )
        _, y, _ = ts.rows(cfg.depth)
        report.update(training_replicates=len(ts), training_candidates=int(len(y)), hidden_positives=int(y.sum()))
        if y.sum() < self.min_hidden():
            return None, (
                f"{int(y.sum())} hidden positives among the training candidates of {len(multi)} queries with two or "
                f"more labelled positives; learning needs {self.min_hidden()} ({EVENTS_PER_FEATURE} per feature)"
            )
        fold_of_query = {q: self.fold(ctx.data.queries.texts[q]) for q in set(ts.query)}
        models, problem = cross_fit(ts, fold_of_query, cfg.folds, cfg.regularization, cfg.depth)
        if problem is not None:
            return None, problem
        replay, heldout = held_out(ts, models, fold_of_query, cfg.depth)
        target, loosened = supported_target(replay, n, cfg.target_fn_ratio)
        if target is None:
            return None, loosened
        threshold, estimate = choose_cutoff(replay, n, target, ctx.seed)
        report.update(
            heldout=heldout,
            threshold=threshold,
            target_used=target,
            estimate=estimate,
            coefficients=coefficients(models),
        )
        return {"models": models, "threshold": threshold, "trained_queries": _trained(ts, fold_of_query)}, loosened

    # -- judging --------------------------------------------------------------------------------------
    def judge(self, candidates: Sequence[Candidate]) -> list[StageVerdict]:
        if not candidates:
            return []
        fit = self._ensure_fit()
        out: list[StageVerdict | None] = [None] * len(candidates)
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
        for qid, idx in by_query.items():
            if not idx:
                continue
            view = views[q_row[qid]]
            pos_ids = self._positive_ids(qid, candidates[idx[0]])
            if not pos_ids:
                for i in idx:
                    out[i] = StageVerdict("uncertain", detail="no labelled positive in the corpus", failed=True)
                continue
            positives = b.corpus_passages(view, np.asarray([d_row[d] for d in pos_ids], np.int64))
            cand = self._passages(view, [candidates[i] for i in idx], outside_emb)
            copies = near_copies(cand, positives, self.cfg.near_copy_jaccard)
            if fit["models"] is not None:
                X = b.matrix(view, cand, positives)
                risk = fit["models"][self.fold(data.queries.texts[q_row[qid]])].predict_proba(X)[:, 1]
                verdicts = [self._learned(float(r), fit["threshold"]) for r in risk]
            else:
                verdicts = self._fallback(view, cand, positives)
            for j, i in enumerate(idx):
                if copies[j] >= 0:
                    verdicts[j] = StageVerdict(
                        "false_negative", 1.0, verdicts[j].model, detail=f"near-copy of positive {pos_ids[copies[j]]}"
                    )
                v = verdicts[j]
                v.verdict, v.detail = restrict(v.verdict, self.cfg.decides, v.detail)
                out[i] = v
        return out  # type: ignore[return-value]

    def _learned(self, risk: float, cutoff: float) -> StageVerdict:
        detail = f"risk {risk:.4f} {'>=' if risk >= cutoff else '<'} cut-off {cutoff:.4f}"
        verdict = "negative" if risk < cutoff else "false_negative"
        if verdict == "false_negative" and self.cfg.escalate_below is not None and risk < self.cfg.escalate_below:
            verdict, detail = "uncertain", f"{detail}, below escalate_below {self.cfg.escalate_below:g}"
        return StageVerdict(verdict, risk, "fn_risk:logistic", detail=detail)

    def _fallback(self, view, cand: Passages, positives: Passages) -> list[StageVerdict]:
        """The positive-aware filter's verdict against the query's best labelled positive (a candidate that
        scores about as high as it or higher); its score is the margin to that positive."""
        q = np.asarray(self.ctx.query_emb[view.row], np.float32)
        s, anchor = cand.emb @ q, float((positives.emb @ q).max())
        bound = float(self.cfg.fallback.threshold(np.asarray([anchor], np.float32))[0])
        model = f"fn_risk:fallback:{self.cfg.fallback.kind}"
        out = []
        for x in s.tolist():
            flagged = x > bound
            detail = f"fallback: score {x:.4f} {'>' if flagged else '<='} {bound:.4f} (best positive {anchor:.4f})"
            verdict = "false_negative" if flagged else "negative"
            if flagged and self.cfg.escalate_below is not None:
                verdict, detail = "uncertain", f"{detail}; a fallback flag escalates"
            out.append(StageVerdict(verdict, float(x - anchor), model, detail=detail))
        return out

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
        import scipy.sparse as sp

        b, d_row = self.builder(), self.ctx.data.corpus.row_of
        inside = [j for j, c in enumerate(cands) if c.doc_id in d_row]
        other = [j for j, c in enumerate(cands) if c.doc_id not in d_row]
        parts = [(inside, b.corpus_passages(view, np.asarray([d_row[cands[j].doc_id] for j in inside], np.int64)))]
        if other:
            texts = [cands[j].doc for j in other]
            parts.append((other, b.outside_passages(view, texts, np.stack([outside_emb[t] for t in texts]))))
        order = np.argsort(np.asarray([j for where, _ in parts for j in where], np.int64), kind="stable")
        return Passages(
            np.concatenate([p.emb for _, p in parts])[order],
            sp.vstack([p.lexical for _, p in parts]).tocsr()[order],
            np.concatenate([p.bm25 for _, p in parts])[order],
        )


def _trained(ts, fold_of_query: dict[int, int]) -> dict[int, frozenset[int]]:
    """Per fold, the queries its model learned from (every query outside the fold)."""
    queries = set(ts.query)
    return {f: frozenset(q for q in queries if fold_of_query[q] != f) for f in set(fold_of_query.values())}


def _notices(report: dict) -> list[str]:
    """Loud lines for a learned judge whose operating point is poor: a target it cannot meet, rankings that
    run out before n candidates are cleared, or negatives far below the hardness limit."""
    est, out = report.get("estimate") or {}, []
    if not est.get("reachable", True):
        out.append(
            f"fn_risk: no cut-off meets target_fn_ratio {report['target_used']:g} in the held-out replay; "
            "it flags all it can (the lowest cut-off)"
        )
    if est.get("replicates_short"):
        out.append(
            f"fn_risk: {est['replicates_short']} of {est['replicates']} held-out replicates run out of cleared "
            f"candidates within rank {report['replay_depth']}: expect pairs short of negatives"
        )
    if (est.get("flagged_share") or 0) > 0.5 and (est.get("rank_vs_oracle") or 0) > 10:
        out.append(
            f"fn_risk: it flags {est['flagged_share']:.0%} of the candidates selection looks at, and the kept "
            f"negatives sit at {est['rank_vs_oracle']:.1f}x the hardness limit: they are easy"
        )
    return out


def summary(report: dict) -> str:
    """One line on what the judge did: learned (with the replay's estimate) or fell back (and why)."""
    if report.get("mode") != "learned":
        fallback = report.get("fallback") or {}
        params = ", ".join(f"{k} {v}" for k, v in fallback.items() if k != "kind")
        return f"fell back to the positive-aware {fallback.get('kind')} filter ({params}): {report.get('why')}"
    est = report.get("estimate") or {}
    ratio, iv = est.get("fn_ratio"), est.get("fn_ratio_interval")
    interval = f" [90% {iv[0]:.2f}-{iv[1]:.2f}]" if iv else ""
    hardness = (
        f" at {est['rank_vs_oracle']:.1f}x the hardness limit (mean rank {est['mean_rank']:.1f} vs {est['oracle_mean_rank']:.1f})"
        if est.get("rank_vs_oracle")
        else ""
    )
    target = report.get("target_used")
    aim = f"target {target:.2f}x, loosened: too few hidden positives" if report.get("why") else f"target {target:g}x"
    return (
        f"learned from {report.get('hidden_positives')} hidden positives of {report.get('training_queries')} "
        f"queries (held-out AUC {report.get('heldout', {}).get('auc') or 0:.3f}); cut-off {report.get('threshold'):.4g} "
        f"({aim}): estimated FN {'-' if ratio is None else f'{ratio:.2f}'}x top-{report.get('n_select')}{interval}"
        f"{hardness}"
    )
