"""Lexical evidence for the false-negative risk model: BM25 of any (query, passage) pair, and unit-length
term vectors (the BM25 term weights of a passage, L2-normalised) to compare passages with each other.

BM25 is computed here rather than through ``bm25s`` because the risk model needs the score of
*given* pairs (a mined candidate, a labelled positive, an LLM-written passage that is not in the
corpus), not a top-k list: one sparse matrix of per-term BM25 weights over the corpus answers any
corpus pair with a lookup, and a passage from outside the corpus is weighted with the corpus'
statistics (idf, average length). Tokens: scikit-learn's ``CountVectorizer`` (lowercase,
``\\b\\w\\w+\\b``, its English stop words), so nothing is trained and nothing is downloaded.

The same rows, normalised, are the passages' lexical vectors: their dot product is a tf-idf-like
cosine between two passages, and their non-zero pattern is the passage's set of terms (Jaccard).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

K1 = 1.2  # Robertson / Lucene defaults; the features are ratios within a query, so these are not tuned
B = 0.75


class Lexical:
    """BM25 weights of a corpus and their unit-length rows. Built once per judge."""

    def __init__(self, corpus_texts: Sequence[str]):
        from sklearn.feature_extraction.text import CountVectorizer

        self.vectorizer = CountVectorizer(
            lowercase=True, stop_words="english", token_pattern=r"(?u)\b\w\w+\b", dtype=np.float32
        )
        try:
            tf = self.vectorizer.fit_transform(corpus_texts).tocsr()
        except ValueError:  # no token at all (an empty or stop-word-only corpus): every score is 0
            self.vectorizer = None
            tf = sp.csr_matrix((len(corpus_texts), 1), dtype=np.float32)
        self.n_docs = len(corpus_texts)
        df = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float64)
        self.idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
        dl = np.asarray(tf.sum(axis=1)).ravel()
        self.avgdl = float(dl.mean()) if len(dl) and dl.mean() > 0 else 1.0
        self.weights = self._bm25_weights(tf, dl)  # [docs, vocab] csr: BM25 contribution of each term
        self.unit = unit_rows(self.weights)

    @property
    def vocabulary(self) -> int:
        return self.weights.shape[1]

    def _bm25_weights(self, tf, dl: np.ndarray):
        coo = tf.tocoo()
        norm = K1 * (1.0 - B + B * dl[coo.row] / self.avgdl)
        data = (coo.data * (K1 + 1.0) / (coo.data + norm) * self.idf[coo.col]).astype(np.float32)
        return sp.csr_matrix((data, (coo.row, coo.col)), shape=tf.shape)

    def term_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Distinct known term ids per text (a query's terms count once, as in BM25)."""
        if self.vectorizer is None:
            return [np.zeros(0, np.int64) for _ in texts]
        m = self.vectorizer.transform(texts).tocsr()
        return [np.unique(m.indices[m.indptr[i] : m.indptr[i + 1]]).astype(np.int64) for i in range(m.shape[0])]

    def query_vector(self, terms: np.ndarray) -> sp.csr_matrix:
        """A query's unit-length lexical vector [1, vocab]: its distinct terms weighted by idf."""
        vec = sp.csr_matrix(
            (self.idf[terms].astype(np.float32), (np.zeros(len(terms), np.int64), terms)), shape=(1, self.vocabulary)
        )
        return unit_rows(vec)

    def external(self, texts: Sequence[str]) -> sp.csr_matrix:
        """BM25 weight rows [len(texts), vocab] for passages outside the corpus (corpus statistics)."""
        if self.vectorizer is None or not len(texts):
            return sp.csr_matrix((len(texts), self.vocabulary), dtype=np.float32)
        tf = self.vectorizer.transform(texts).tocsr().astype(np.float32)
        return self._bm25_weights(tf, np.asarray(tf.sum(axis=1)).ravel())

    def scores(self, terms: np.ndarray, rows: np.ndarray, weights=None) -> np.ndarray:
        """BM25(query terms, passage) for passage ``rows`` of ``weights`` (default: the corpus)."""
        weights = self.weights if weights is None else weights
        if not len(terms) or not len(rows):
            return np.zeros(len(rows), np.float32)
        return np.asarray(weights[rows][:, terms].sum(axis=1)).ravel().astype(np.float32)


def unit_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """The rows of ``m`` scaled to unit L2 norm (empty rows stay empty)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)) @ m, dtype=np.float32)


def jaccard(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
    """Jaccard of the term sets [len(a), len(b)] of two sets of lexical rows (non-zero = the term occurs)."""
    ba, bb = (a != 0).astype(np.float32), (b != 0).astype(np.float32)
    inter = np.asarray((ba @ bb.T).todense(), np.float64).reshape(a.shape[0], b.shape[0])
    sa, sb = np.asarray(ba.sum(axis=1)).ravel(), np.asarray(bb.sum(axis=1)).ravel()
    union = sa[:, None] + sb[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)
