"""What every feature shares, and nothing feature-specific: typed records (``records``), seeded
randomness (``seeding``), text identity (``text``: the one normaliser and content id), atomic writes,
checked cache files and the default cache directory (``files``), output folders (``outdir``), the strict
config base (``strict``), registries (``registry``), YAML with one-line errors (``yamlio``), the input
checks every reader of a data file shares (``checks``), user errors (``errors``), model-folder checks
(``models``), progress bars (``progress``) and synth's own version (``version``).

Modules here import nothing from the rest of synth. A helper belongs here when two features need it;
a new one goes into the module of its kind above, or a new module named for what it is.
"""
