"""Cross-encoder stage: score = CE(q, d-) - CE(q, d+), the candidate measured against the query's own
positive (a fixed "is it relevant" cut-off is not comparable across queries; the margin is).

The model is a sentence-transformers ``CrossEncoder`` folder (``synth train-judge`` makes one), loaded
lazily and offline (``local_files_only``): a fully stored rerun never loads it. CE scores are
``CrossEncoder.predict`` outputs, i.e. sigmoid probabilities for a one-label model, so the margin
lies in [-1, 1] and thresholds are in that unit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from synth.core.errors import UserError
from synth.judge import fingerprint_of, threshold_verdict
from synth.judge.base import Candidate, StageVerdict
from synth.judge.config import CrossEncoderStage
from synth.core.models import check_max_length, model_folder

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


def weights_fingerprint(model: str) -> str:
    """Name for a hub-style name; for a folder, the config files and a hash of every weight file, so a
    retrained model in the same folder (same sizes, new weights) never reuses old verdicts."""
    path = Path(model)
    if not path.is_dir():
        return f"name:{model}"
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(path.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(path).as_posix()
        if f.suffix in WEIGHT_SUFFIXES:
            h.update(f"{rel}\0{f.stat().st_size}\0".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        elif f.suffix == ".json" and not rel.startswith("synth_judge"):  # training log: not the weights
            h.update(f"{rel}\0".encode() + f.read_bytes())
    return f"dir:{path.name}:{h.hexdigest()}"


class CrossEncoderJudge:
    kind = "cross_encoder"

    def __init__(self, cfg: CrossEncoderStage, **_context):
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._model = None
        self._fp: str | None = None

    def fingerprint(self) -> str:
        if self._fp is None:
            c = self.cfg
            # max_length changes scores (truncation); batch_size and device do not
            self._fp = fingerprint_of(
                kind=self.kind,
                model=weights_fingerprint(c.model),
                max_length=c.max_length,
                lo=c.negative_below,
                hi=c.false_negative_at_or_above,
                decides=sorted(c.decides),
            )
        return self._fp

    def model(self):
        if self._model is None:
            from sentence_transformers import CrossEncoder

            device = self.cfg.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            try:  # a missing or non-model folder, or a name (never downloaded): one line, before loading
                folder = model_folder(self.cfg.model, f"{self.name}.model")
            except UserError as e:
                raise UserError(f"{e}; train one with `synth train-judge`") from None
            check_max_length(folder, self.cfg.max_length, f"{self.name}.max_length")
            try:
                self._model = CrossEncoder(
                    str(folder), device=device, max_length=self.cfg.max_length, local_files_only=True
                )
            except Exception as e:  # any load failure is a config problem: one line, no traceback
                first = (str(e).strip().splitlines() or [""])[0][:200]
                raise UserError(
                    f"{self.name}.model: cannot load a cross-encoder from {self.cfg.model!r} "
                    f"({type(e).__name__}: {first}); train one with `synth train-judge`"
                ) from None
        return self._model

    def predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        scores = self.model().predict(
            pairs, batch_size=self.cfg.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return [float(s) for s in scores.reshape(len(pairs), -1)[:, 0]]

    def judge(self, candidates: Sequence[Candidate]) -> list[StageVerdict]:
        if not candidates:
            return []
        # each query's positive is scored once, however many of its negatives are judged
        pos_pairs = list(dict.fromkeys((c.query, c.positive) for c in candidates))
        neg_pairs = [(c.query, c.doc) for c in candidates]
        scores = self.predict(neg_pairs + pos_pairs)
        pos_score = dict(zip(pos_pairs, scores[len(neg_pairs) :]))
        model = Path(self.cfg.model).name
        out = []
        for c, s_neg in zip(candidates, scores[: len(neg_pairs)]):
            s_pos = pos_score[(c.query, c.positive)]
            score = s_neg - s_pos
            verdict, detail = threshold_verdict(score, self.cfg)
            out.append(StageVerdict(verdict, score, model, detail=f"{detail} (ce- {s_neg:.3f}, ce+ {s_pos:.3f})"))
        return out
