"""One progress bar helper (rich), shared by every long step. Writes to stderr; quiet when
``SYNTH_PROGRESS=0`` or when stderr is not a terminal (rich then prints nothing live)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, done: int = 0) -> Iterator[Callable[[int], None]]:
    if os.environ.get("SYNTH_PROGRESS", "1") == "0":
        yield lambda n: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total, completed=min(done, total))
        yield lambda n: bar.advance(task, n)
