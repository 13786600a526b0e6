"""Engines are an extension point like the others (``synth.core.registry``): the recipe's ``engine`` union and
``open_engine`` both come from ``synth.engine.config.REGISTRY``, and the LLM pool asks the engine it is given for
its backends (``Engine.llm_backend``) instead of knowing engine kinds. No Ray is started here."""

from __future__ import annotations

import typing
from typing import Literal

import pytest

import synth
from synth.core.errors import UserError
from synth.core.registry import config_union
from synth.core.strict import StrictModel
from synth.core.yamlio import validate
from synth.engine import LocalEngine, open_engine
from synth.engine.config import REGISTRY, LocalEngineConfig, RayEngineConfig
from synth.llm.base import ChatRequest, ChatResponse
from synth.llm.config import LocalConfig, OpenAIConfig
from synth.llm.pool import ClientPool
from synth.recipe import Recipe
from tests.support.runs import RESA2_RECIPE

NOWHERE = "http://127.0.0.1:9/v1"  # the discard port: a backend that really sent a request would fail


class TinyEngineConfig(StrictModel):
    kind: Literal["tiny"] = "tiny"
    label: str = "tiny"


class EchoBackend:
    """Answers each request with its last message, upper-cased: proof the pool used the engine's backend."""

    kind = "openai"

    def __init__(self, cfg: OpenAIConfig):
        self.cfg = cfg

    def identity(self) -> dict:
        return {"kind": "openai", "base_url": "tiny-engine", "model": self.cfg.model}

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def generate(self, requests, on_response, should_stop=lambda: False) -> None:
        for i, request in enumerate(requests):
            on_response(i, ChatResponse(request.messages[-1][1].upper(), model=self.cfg.model))


class TinyEngine(LocalEngine):
    """A new engine kind in a few lines: the local engine's work, its own kind, and its own LLM backend."""

    kind = "tiny"

    def __init__(self, cfg: TinyEngineConfig, cache_dir: str | None = None):
        super().__init__(cfg)
        self.cache_dir = cache_dir

    def llm_backend(self, cfg, cache_dir):
        return EchoBackend(cfg) if cfg.kind == "openai" else None


def test_the_recipe_engine_union_is_the_registry():
    union = typing.get_args(Recipe.model_fields["engine"].annotation)
    assert union == tuple(config for config, _ in REGISTRY.values()) == (LocalEngineConfig, RayEngineConfig)


def test_a_registered_kind_validates_and_opens_through_open_engine(monkeypatch, tmp_path):
    monkeypatch.setitem(REGISTRY, "tiny", (TinyEngineConfig, TinyEngine))
    cfg = validate(config_union(REGISTRY), {"kind": "tiny", "label": "mine"}, "engine")
    engine = open_engine(cfg, cache_dir=str(tmp_path))
    assert isinstance(engine, TinyEngine) and (engine.cfg.label, engine.cache_dir) == ("mine", str(tmp_path))
    assert list(engine.map_actors(lambda: lambda x: x * 2, {}, [1, 2, 3], label="double")) == [2, 4, 6]
    with pytest.raises(UserError, match=r"^engine: tiny\.wide: unknown key$"):
        validate(config_union(REGISTRY), {"kind": "tiny", "wide": 1}, "engine")

    llm = OpenAIConfig(base_url=NOWHERE, model="m", api_key_env=None, probe_schema=False)
    with ClientPool(llm, tmp_path / "cache", engine=engine) as pool:
        [answer] = pool().complete("q", [ChatRequest.make([("user", "hello")])])
    assert answer.ok and answer.text == "HELLO"


def test_engines_hand_out_llm_backends_and_the_local_one_leaves_them_to_the_pool(tmp_path):
    llm = OpenAIConfig(base_url=NOWHERE, model="m", api_key_env=None)
    local = open_engine(None)
    assert isinstance(local, LocalEngine) and local.llm_backend(llm, tmp_path) is None
    with ClientPool(llm, tmp_path / "cache", engine=local) as pool:
        assert type(pool().backend).__name__ == "OpenAIBackend"  # in this process, as with no engine at all

    ray = open_engine(RayEngineConfig(storage=str(tmp_path / "shared")), cache_dir=str(tmp_path))
    try:
        remote = ray.llm_backend(llm, tmp_path / "cache")  # no request sent: the cluster is never started
        assert type(remote).__name__ == "RemoteBackend" and remote.store.folder.parent.parent == tmp_path / "shared"
        assert ray.llm_backend(LocalConfig(), tmp_path) is None  # one llama.cpp server on the driver
    finally:
        ray.close()


def test_an_unknown_kind_is_the_same_one_line_error():
    with pytest.raises(UserError) as e:
        synth.load_recipe(RESA2_RECIPE, {"engine.kind": "spark"})
    assert str(e.value).endswith(
        "engine: Input tag 'spark' found using 'kind' does not match any of the expected tags: 'local', 'ray' "
        "(got {'kind': 'spark'})"
    )
