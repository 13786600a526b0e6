"""Selection: from each pair's mined pool and synthetic negatives to the negatives it publishes, judged
(the cascade and its policy), mixed (``mix``: quotas, deduplication) and backfilled from further down
the dense ranking (``backfill``); ``selection`` runs the rounds.

A new way to combine or refill negatives goes into ``mix`` or ``backfill``; a new round rule into
``selection``. Judging itself lives in ``synth.judge``.
"""
