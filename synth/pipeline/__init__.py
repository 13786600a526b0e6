"""The run as a list of stages over one ``RunContext``, and the commands that compose them.

``stages/`` holds one module per stage and the ``STAGES`` list; each module's ``STAGE`` declares the context
fields it reads and writes and the report sections it fills (``stages/base.py``). ``context.py`` holds the
context and ``open_context``, the one way to open it (with the run's ``synth.llm.pool.ClientPool``). Who runs
the stages: ``run.run_recipe`` (``synth run``: all of them, then the report), ``run.plan_recipe``
(``--dry-run``: each stage's ``dry`` version over a planning LLM pool), ``synth.evaluate.fn_probe``
(``PROBE_STAGES`` on a view of the source with hidden positives) and ``relabel.py`` (``synth relabel``: the
``synth.judge.runner.CascadeRunner`` over an existing dataset). A new stage is one module in ``stages/`` and
one line in ``STAGES``; a new command that runs stages goes here.
"""
