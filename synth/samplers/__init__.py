"""Sampler registry: adding a sampler is one module and one line in ``_REGISTRY``."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from synth.samplers.base import MiningContext, PairBlock, Picks, Sampler
from synth.samplers.bm25 import BM25Config, BM25Sampler, PassageBM25Config, PassageBM25Sampler
from synth.samplers.cluster import ClusterConfig, ClusterSampler
from synth.samplers.random import RandomConfig, RandomSampler
from synth.samplers.resa2 import ReSa2Config, ReSa2Sampler
from synth.samplers.simans import SimANSConfig, SimANSSampler
from synth.samplers.topk import TopKConfig, TopKSampler
from synth.samplers.trisampler import TriSampler, TriSamplerConfig

# kind -> (config model, sampler class)
_REGISTRY: dict[str, tuple[type, type]] = {
    "topk": (TopKConfig, TopKSampler),
    "random": (RandomConfig, RandomSampler),
    "bm25": (BM25Config, BM25Sampler),
    "passage_bm25": (PassageBM25Config, PassageBM25Sampler),
    "simans": (SimANSConfig, SimANSSampler),
    "trisampler": (TriSamplerConfig, TriSampler),
    "cluster": (ClusterConfig, ClusterSampler),
    "resa2": (ReSa2Config, ReSa2Sampler),
}

SamplerConfig = Annotated[Union[tuple(cfg for cfg, _ in _REGISTRY.values())], Field(discriminator="kind")]


def build_sampler(config) -> Sampler:
    return _REGISTRY[config.kind][1](config)


def sampler_kinds() -> list[str]:
    return list(_REGISTRY)


__all__ = ["MiningContext", "PairBlock", "Picks", "Sampler", "SamplerConfig", "build_sampler", "sampler_kinds"]
