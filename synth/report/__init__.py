"""The typed reports synth writes, as pydantic models: ``report.json`` of a run (``run.RunReport``, its judging
and generation sections in ``judging.py`` and ``generation.py``), and relabel's ``report.json`` and
``fn_probe.json`` (``files.py``). Writers (``synth.pipeline``) validate against them before a file is written;
readers (the card, the HTML page, compare, the CLI) parse once and read attributes. This package imports only
pydantic and synth's feature modules, so both sides can stand on it."""
