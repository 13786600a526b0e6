"""The run as a list of stages over one ``RunContext``.

``stages.py`` holds one function per stage; ``synth.pipeline.run.run_recipe`` runs the whole list, and
``synth fn-probe`` runs the data path (embed -> index -> pairs -> mine -> select) of the same list on
a view of the source with hidden positives, so the probe measures exactly what a run publishes.
A new stage is one function in ``stages.py`` and one entry in ``STAGES``.
"""
