"""The run as a list of stages over one ``RunContext``, and the commands that compose them.

``stages.py`` holds the ``STAGES`` list and the data-path stages (``generation.py`` the generation ones);
``context.py`` the context every stage reads and writes, and ``open_context``, the one way to open it (with
the run's ``synth.llm.pool.ClientPool``). Who runs the stages: ``run.run_recipe`` (``synth run``: all of
them, then the report), ``run.plan_recipe`` (``--dry-run``: each stage's ``dry`` version over a planning
LLM pool), ``synth.evaluate.fn_probe`` (``PROBE_STAGES`` on a view of the source with hidden positives) and
``relabel.py`` (``synth relabel``: the run's ``CascadeRunner`` over an existing dataset).
A new stage is one function and one ``Stage`` line in ``STAGES``; a new command that runs stages goes here.
"""
