"""Progress bars that move while one measure call times many models together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ofa_deploy.backend.interface import Backend


@contextmanager
def measuring(backend: Backend, bar: Any, size: int) -> Iterator[None]:
    """Advance ``bar`` (a tqdm) by ``size`` over one measure call of ``size`` models.

    A host runtime times a whole batch in interleaved rounds, so no model is finished before the
    last round; the bar follows the rounds instead, and reaches ``+size`` when the call returns."""
    start = bar.n

    def report(done: int, total: int) -> None:
        target = start + (size * done) // max(total, 1)
        if target > bar.n:
            bar.update(target - bar.n)

    backend.on_progress = report
    try:
        yield
    finally:
        backend.on_progress = None
    if start + size > bar.n:
        bar.update(start + size - bar.n)
