"""Lexical evidence for the false-negative risk model: BM25 of any (query, passage) pair, and token-set
Jaccard between passages.

BM25 is computed here rather than through ``bm25s`` because the risk model needs the score of
*given* pairs (a mined candidate, a labelled positive, an LLM-written passage that is not in the
corpus), not a top-k list: one sparse matrix of per-term BM25 weights over the corpus answers any
corpus pair with a lookup, and a passage from outside the corpus is weighted with the corpus'
statistics (idf, average length). Tokens: scikit-learn's ``CountVectorizer`` (lowercase,
``\\b\\w\\w+\\b``, its English stop words), so nothing is trained and nothing is downloaded.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

K1 = 1.2  # Robertson / Lucene defaults; the features are ratios within a query, so these are not tuned
B = 0.75


class Lexical:
    """BM25 weights of a corpus, and token sets for Jaccard. Built once per judge."""

    def __init__(self, corpus_texts: Sequence[str]):
        from sklearn.feature_extraction.text import CountVectorizer

        self.vectorizer = CountVectorizer(
            lowercase=True, stop_words="english", token_pattern=r"(?u)\b\w\w+\b", dtype=np.float32
        )
        try:
            tf = self.vectorizer.fit_transform(corpus_texts).tocsr()
        except ValueError:  # no token at all (an empty or stop-word-only corpus): every score is 0
            self.vectorizer = None
            tf = None
        self.n_docs = len(corpus_texts)
        if tf is None:
            self.idf = np.zeros(0, np.float32)
            self.avgdl = 1.0
            self.weights = None
            self.token_sets: list[frozenset[int]] = [frozenset() for _ in corpus_texts]
            return
        df = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float64)
        self.idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        dl = np.asarray(tf.sum(axis=1)).ravel()
        self.avgdl = float(dl.mean()) if len(dl) and dl.mean() > 0 else 1.0
        self.weights = self._bm25_weights(tf, dl)  # [docs, vocab] csr: BM25 contribution of each term
        self.token_sets = [frozenset(tf.indices[tf.indptr[i] : tf.indptr[i + 1]].tolist()) for i in range(tf.shape[0])]

    def _bm25_weights(self, tf, dl: np.ndarray):
        coo = tf.tocoo()
        norm = K1 * (1.0 - B + B * dl[coo.row] / self.avgdl)
        data = (coo.data * (K1 + 1.0) / (coo.data + norm) * self.idf[coo.col]).astype(np.float32)
        import scipy.sparse as sp

        return sp.csr_matrix((data, (coo.row, coo.col)), shape=tf.shape)

    def term_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Distinct known term ids per text (a query's terms count once, as in BM25)."""
        if self.vectorizer is None:
            return [np.zeros(0, np.int64) for _ in texts]
        m = self.vectorizer.transform(texts).tocsr()
        return [np.unique(m.indices[m.indptr[i] : m.indptr[i + 1]]).astype(np.int64) for i in range(m.shape[0])]

    def external(self, texts: Sequence[str]):
        """BM25 weight rows [len(texts), vocab] and token sets for passages outside the corpus."""
        if self.vectorizer is None or not len(texts):
            return None, [frozenset() for _ in texts]
        tf = self.vectorizer.transform(texts).tocsr().astype(np.float32)
        dl = np.asarray(tf.sum(axis=1)).ravel()
        sets = [frozenset(tf.indices[tf.indptr[i] : tf.indptr[i + 1]].tolist()) for i in range(tf.shape[0])]
        return self._bm25_weights(tf, dl), sets

    def scores(self, terms: np.ndarray, rows: np.ndarray, weights=None) -> np.ndarray:
        """BM25(query terms, passage) for passage ``rows`` of ``weights`` (default: the corpus)."""
        weights = self.weights if weights is None else weights
        if weights is None or not len(terms) or not len(rows):
            return np.zeros(len(rows), np.float32)
        return np.asarray(weights[rows][:, terms].sum(axis=1)).ravel().astype(np.float32)


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)
