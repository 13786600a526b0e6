"""What a finished run shows the world: the dataset card (``card``), the HTML report page (``report``),
the push to the Hugging Face Hub (``hub``), and the guards every published file passes through: no
local path (``paths``), no credential (``secrets``), user strings escaped (``escape``).

A new published file is one module that renders from the run's report and writes through
``synth.core.files``; run it through ``paths``/``secrets``/``escape`` like the card.
"""
