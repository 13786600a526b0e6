"""Mined pairs -> a ``datasets.Dataset`` in a sentence-transformers layout, with provenance; and the
run's other outputs: the ``DatasetDict`` of named configs, Tevatron JSONL and the BEIR export.

Every layout config (``triplets``, ``n_tuple``, ...) holds only what ``SentenceTransformerTrainer``
takes: the text columns, in the order the losses read them, and a float ``label`` where the layout's
loss needs one. sentence-transformers tokenises *every* non-label column, so anything else would
break training as loaded (a list column: "Unsupported input type: list"). The provenance of config
``X`` (ids, scores, sampler, seed, query origin, judge verdicts) is the parallel config
``X_provenance``, row for row: its ``row_id`` is the row's index in ``X``. ``X`` carries no ``row_id``
(the trainer would take it as an input), so the two align by row order, which ``with_provenance``
checks when it joins them back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from synth.select.mix import MINED, Negative
from synth.core.records import Corpus, Mined, Pairs, Queries

PROVENANCE_COLUMNS = ["query_id", "positive_id", "negative_ids", "negative_scores", "positive_score", "sampler", "seed",
                      "query_origin", "query_model", "query_prompt_sha256", "persona_id", "query_type",
                      "negative_sources"]
# Per negative, aligned with negative_ids: the judge cascade's verdict and where it came from (the
# prompt hash list is not named *prompt_sha256: that suffix means one hash per row). Only
# written when the run judged its negatives.
JUDGE_COLUMNS = ["negative_verdicts", "negative_judge_stages", "negative_judge_scores", "negative_judge_models",
                 "negative_judge_prompt_hashes"]
# Where a row's query came from: "real" (the source) or "synthetic" (an LLM, with model and prompt hash).
QUERY_PROVENANCE = ["query_origin", "query_model", "query_prompt_sha256", "persona_id", "query_type"]
_REAL_QUERY = {"query_origin": "real", "query_model": "", "query_prompt_sha256": "", "persona_id": "", "query_type": ""}
# output format -> name of its extra config in DIR/dataset (config names avoid "-")
CONFIG_NAMES = {"n-tuple": "n_tuple", "triplet": "triplet", "labeled-pair": "labeled_pair", "pairs": "pairs"}
TRAINING_CONFIG = "triplets"  # the run's main layout config, whatever the format
ROW_ID = "row_id"  # first column of a provenance config: the row's index in its layout config
PROVENANCE_SUFFIX = "_provenance"


def text_columns(fmt: str, n: int) -> list[str]:
    return {
        "n-tuple": ["anchor", "positive", *[f"negative_{i + 1}" for i in range(n)]],
        "triplet": ["anchor", "positive", "negative"],
        "labeled-pair": ["sentence1", "sentence2", "label"],
        "pairs": ["anchor", "positive"],
    }[fmt]


def provenance_config(name: str) -> str:
    """The name of the config that holds the provenance of layout config ``name``."""
    return name + PROVENANCE_SUFFIX


def layout_configs(name: str, cols: dict, fmt: str, n: int) -> dict:
    """``build_rows``' columns as two configs: ``name`` with the trainable columns only, and
    ``name_provenance`` with ``row_id`` then every other column, row for row."""
    import datasets

    text = text_columns(fmt, n)
    # Explicit types: an empty config would otherwise get "null" columns that no loss accepts.
    features = datasets.Features({c: datasets.Value("float64" if c == "label" else "string") for c in text})
    train = datasets.Dataset.from_dict({c: cols[c] for c in text}, features=features)
    rest = {c: v for c, v in cols.items() if c not in text}
    prov = datasets.Dataset.from_dict({ROW_ID: list(range(len(train))), **rest})
    return {name: train, provenance_config(name): prov}


def with_provenance(configs, name: str, where: str = "dataset"):
    """Config ``name`` of ``configs`` with its provenance config's columns joined back (``row_id`` kept, so a
    writer can split them again); ``configs[name]`` alone when it has no provenance config. A provenance
    config out of line with its rows is an ``InputError`` naming both."""
    import datasets

    from synth.core.errors import InputError

    rows = configs[name]
    prov_name = provenance_config(name)
    if prov_name not in configs:
        return rows
    prov = configs[prov_name]
    # read through Arrow: a large config never becomes a Python list
    ids = prov.with_format("arrow")[:][ROW_ID].to_numpy() if ROW_ID in prov.column_names and len(prov) else []
    if len(prov) != len(rows) or not np.array_equal(ids, np.arange(len(rows))):
        raise InputError(f"{where}: config {prov_name}", f"expected {len(rows)} rows with {ROW_ID} 0..{len(rows) - 1} "
                                                          f"in order, one per row of config {name}")
    clash = [c for c in prov.column_names if c in rows.column_names]
    if clash:
        raise InputError(f"{where}: config {prov_name}", f"columns {', '.join(clash)} are also in config {name}")
    return datasets.concatenate_datasets([rows, prov], axis=1)


def negatives_from_mined(mined: Mined, corpus: Corpus) -> list[list[Negative]]:
    """Per pair, the sampler's picks as ``Negative``s (unfilled slots left out)."""
    out = []
    for rows, scores in zip(mined.negative_rows.tolist(), mined.negative_scores.tolist()):
        out.append([Negative(corpus.ids[r], corpus.texts[r], float(s), MINED) for r, s in zip(rows, scores) if r >= 0])
    return out


def build_rows(fmt: str, n: int, pairs: Pairs, mined: Mined | None, corpus: Corpus, queries: Queries,
               query_provenance: dict[str, dict] | None = None,
               negatives: list[list[Negative] | None] | None = None, judged: bool = False) -> tuple[dict, dict]:
    """Column dict for ``Dataset.from_dict`` and counts for the report (rows, dropped short pairs).
    ``query_provenance`` maps synthetic query ids to their ``QUERY_PROVENANCE`` values. ``negatives``
    (per pair, aligned with ``pairs``; ``None`` = pair dropped) replaces the mined picks when given
    (judged / mixed negatives); ``judged`` adds the ``JUDGE_COLUMNS``."""
    query_provenance = query_provenance or {}
    qtext = [queries.texts[r] for r in pairs.query_rows.tolist()]
    ptext = [corpus.texts[r] for r in pairs.positive_rows.tolist()]
    columns = text_columns(fmt, n) + PROVENANCE_COLUMNS + (JUDGE_COLUMNS if judged else [])
    cols: dict[str, list] = {c: [] for c in columns}
    counts = {"pairs": len(pairs), "short_pairs_dropped": 0, "negatives": 0}

    def prov(i: int, negs: list[Negative], pos_score: float, sampler: str, seed) -> None:
        cols["query_id"].append(pairs.query_ids[i])
        cols["positive_id"].append(pairs.positive_ids[i])
        cols["negative_ids"].append([x.id for x in negs])
        cols["negative_scores"].append([x.score for x in negs])
        cols["negative_sources"].append([x.source for x in negs])
        cols["positive_score"].append(pos_score)
        cols["sampler"].append(sampler)
        cols["seed"].append(seed)
        origin = query_provenance.get(pairs.query_ids[i], _REAL_QUERY)
        for c in QUERY_PROVENANCE:
            cols[c].append(origin[c])
        if judged:
            cols["negative_verdicts"].append([x.verdict for x in negs])
            cols["negative_judge_stages"].append([x.stage for x in negs])
            cols["negative_judge_scores"].append([x.judge_score for x in negs])
            cols["negative_judge_models"].append([x.model for x in negs])
            cols["negative_judge_prompt_hashes"].append([x.prompt_sha256 for x in negs])

    if fmt == "pairs" or (mined is None and negatives is None):
        for i in range(len(pairs)):
            if negatives is not None and negatives[i] is None:  # dropped (judge policy, leakage)
                continue
            cols["anchor"].append(qtext[i])
            cols["positive"].append(ptext[i])
            prov(i, [], float("nan"), "none", None)
        return cols, counts

    if negatives is None:
        negatives = negatives_from_mined(mined, corpus)
    pos_all = mined.positive_scores.tolist() if mined is not None else [float("nan")] * len(pairs)
    sampler, seed = (mined.sampler, mined.seed) if mined is not None else ("none", None)
    for i in range(len(pairs)):
        negs = negatives[i]
        if negs is None:  # dropped by the judge policy (counted there)
            continue
        if fmt == "n-tuple":
            if len(negs) < n:
                counts["short_pairs_dropped"] += 1
                continue
            negs = negs[:n]
            cols["anchor"].append(qtext[i])
            cols["positive"].append(ptext[i])
            for j, x in enumerate(negs):
                cols[f"negative_{j + 1}"].append(x.text)
            prov(i, negs, pos_all[i], sampler, seed)
        elif fmt == "triplet":
            for x in negs:
                cols["anchor"].append(qtext[i])
                cols["positive"].append(ptext[i])
                cols["negative"].append(x.text)
                prov(i, [x], pos_all[i], sampler, seed)
        else:  # labeled-pair: the positive with label 1, then each negative with label 0
            for passage, label, neg in [(ptext[i], 1.0, [])] + [(x.text, 0.0, [x]) for x in negs]:
                cols["sentence1"].append(qtext[i])
                cols["sentence2"].append(passage)
                cols["label"].append(label)
                prov(i, neg, pos_all[i], sampler, seed)
        counts["negatives"] += len(negs)
    return cols, counts


def score_summary(mined: Mined) -> dict:
    """Score statistics for the report: the score space must be visible to judge the kernels."""
    neg = mined.negative_scores[np.isfinite(mined.negative_scores)]
    pos = mined.positive_scores[np.isfinite(mined.positive_scores)]

    def describe(x: np.ndarray) -> dict:
        if len(x) == 0:
            return {"count": 0}
        q = np.percentile(x, [5, 50, 95])
        return {"count": int(len(x)), "mean": float(x.mean()), "min": float(x.min()), "p5": float(q[0]),
                "median": float(q[1]), "p95": float(q[2]), "max": float(x.max())}

    gap = (mined.positive_scores[:, None] - mined.negative_scores)[np.isfinite(mined.negative_scores)]
    return {"negative": describe(neg), "positive": describe(pos), "positive_minus_negative": describe(gap)}


def save_configs(configs: dict, path: Path) -> None:
    """One ``DatasetDict`` keyed by config name, saved to a temporary sibling and renamed into place."""
    import datasets

    dd = datasets.DatasetDict(configs)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # an empty config would be saved as 0 shards, which does not load back
    dd.save_to_disk(str(tmp), num_shards={name: 1 for name, ds in configs.items() if len(ds) == 0} or None)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def grouped_by_query(pairs: Pairs, corpus: Corpus, queries: Queries, negatives: list[list[Negative] | None],
                     promoted: list[tuple[str, str]] = ()) -> list[tuple[str, str, list[tuple[str, str]],
                                                                         list[tuple[str, str]]]]:
    """(query_id, query, positives [(id, text)], negatives [(id, text)]) per query, in pair order; a query's
    negatives are the union of its pairs' (first occurrence kept); ``promoted`` adds relabelled positives."""
    order: dict[str, tuple[str, dict, dict]] = {}
    for i in range(len(pairs)):
        if negatives[i] is None:
            continue
        qid = pairs.query_ids[i]
        _, pos, neg = order.setdefault(qid, (queries.texts[int(pairs.query_rows[i])], {}, {}))
        pos.setdefault(pairs.positive_ids[i], corpus.texts[int(pairs.positive_rows[i])])
        for x in negatives[i]:
            neg.setdefault(x.id, x.text)
    row_of = corpus.row_of
    for qid, doc_id in promoted:
        if qid in order and doc_id in row_of:
            order[qid][1].setdefault(doc_id, corpus.texts[row_of[doc_id]])
            order[qid][2].pop(doc_id, None)
    return [(qid, q, list(pos.items()), [n for n in neg.items() if n[0] not in pos])
            for qid, (q, pos, neg) in order.items()]


def write_tevatron_file(groups, path: Path) -> dict:
    """Tevatron training JSONL (one line per query), through the relabel job's writer."""
    from synth.judge.policies import Example, Passage
    from synth.formats.inputs import RelabelInput, write_tevatron

    inp = RelabelInput(str(path), "tevatron", "tevatron", 0, [])
    examples = []
    for qid, query, pos, neg in groups:
        inp.raw[qid] = {"query_id": qid, "query": query, "positive_passages": [], "negative_passages": []}
        for doc_id, text in pos + neg:
            inp.passages[(qid, doc_id)] = {"docid": doc_id, "title": "", "text": text}
        examples.append(Example(qid, query, [Passage(d, t) for d, t in pos], [Passage(d, t) for d, t in neg]))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tevatron(inp, examples, path)


def write_beir(groups, corpus: Corpus, folder: Path) -> dict:
    """The evaluation-set form: the whole corpus, the queries of the rows, qrels/train.tsv of their
    positives (relabelled false negatives included). Passages are written as embedded (title + text in
    ``text``, empty ``title``). Files go to temporary names first."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)

    def write(path: Path, lines) -> int:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
                n += 1
        os.replace(tmp, path)
        return n

    docs = write(folder / "corpus.jsonl", (json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False)
                                           for d, t in zip(corpus.ids, corpus.texts)))
    queries = write(folder / "queries.jsonl", (json.dumps({"_id": qid, "text": q}, ensure_ascii=False)
                                               for qid, q, _, _ in groups))
    qrels = write(folder / "qrels" / "train.tsv", ["query-id\tcorpus-id\tscore"] + [
        f"{qid}\t{d}\t1" for qid, _, pos, _ in groups for d, _ in pos]) - 1
    return {"corpus": docs, "queries": queries, "qrels": qrels}
