"""Work items for the executor tests: top-level functions that spawn workers import by name
(spawn children get the parent's sys.path, where conftest put tests/)."""

from __future__ import annotations

import os
import time

POISON = 5


def square_or_die(x: int) -> int:
    """`x * x` after a short wait; the POISON item kills its worker process."""
    if x == POISON:
        os._exit(1)
    time.sleep(0.2)
    return x * x


def square_or_die_once(item: tuple[int, str | None, str]) -> int:
    """`(x, marker, starts)`: `x * x` after a short wait, except that an item with a marker path
    kills its worker process on the attempt that creates the marker (the first). Every attempt
    first appends a line to the file `starts`."""
    x, marker, starts = item
    with open(starts, "a") as f:
        f.write("start\n")
    if marker is not None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return x * x
        os._exit(1)
    time.sleep(0.2)
    return x * x
