"""Hard-negative samplers: given a block of (query, positive) pairs and their dense candidates, pick
``n`` negatives per pair (``base.Sampler``).

A new sampler is one module (its config class and its sampler class) and one line in ``REGISTRY``.
"""

from __future__ import annotations

from synth.core.registry import build, config_union
from synth.samplers.base import MiningContext, PairBlock, Picks, Sampler
from synth.samplers.bm25 import BM25Config, BM25Sampler, PassageBM25Config, PassageBM25Sampler
from synth.samplers.cluster import ClusterConfig, ClusterSampler
from synth.samplers.random import RandomConfig, RandomSampler
from synth.samplers.resa2 import ReSa2Config, ReSa2Sampler
from synth.samplers.simans import SimANSConfig, SimANSSampler
from synth.samplers.topk import TopKConfig, TopKSampler
from synth.samplers.trisampler import TriSampler, TriSamplerConfig

# kind -> (config model, sampler class)
REGISTRY: dict[str, tuple[type, type]] = {
    "topk": (TopKConfig, TopKSampler),
    "random": (RandomConfig, RandomSampler),
    "bm25": (BM25Config, BM25Sampler),
    "passage_bm25": (PassageBM25Config, PassageBM25Sampler),
    "simans": (SimANSConfig, SimANSSampler),
    "trisampler": (TriSamplerConfig, TriSampler),
    "cluster": (ClusterConfig, ClusterSampler),
    "resa2": (ReSa2Config, ReSa2Sampler),
}

SamplerConfig = config_union(REGISTRY)


def build_sampler(config) -> Sampler:
    return build(REGISTRY, config)


def sampler_kinds() -> list[str]:
    return list(REGISTRY)


__all__ = [
    "REGISTRY",
    "MiningContext",
    "PairBlock",
    "Picks",
    "Sampler",
    "SamplerConfig",
    "build_sampler",
    "sampler_kinds",
]
