"""LLM generation stages: personas, synthetic queries (filtered), synthetic hard negatives.

Stages are plain functions over typed records (``synth.generate.records``) and an LLM client with
``complete(stage, requests) -> responses``, ``identity`` and ``model``. Nothing here imports the
runner, the recipe or the CLI; the run's stage modules (``synth.pipeline.stages``) wire them into a run. This package file imports
nothing, so ``synth.recipe`` can import ``synth.generate.config`` cheaply.

A new generation stage is one module here (requests from records, records from answers), its config
in ``config.py``, its prompt in ``synth/assets/prompts``, and one stage module in ``synth/pipeline/stages/``.
"""
