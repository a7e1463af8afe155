"""One generation as the server runs it: its settings, its result, its thread, and stop strings.

``GenParams`` is what a request asks for, ``Generation`` what a finished generation reports,
``Run`` the background thread an engine generates in (the server reads its text pieces as they
come), and ``StopTrimmer`` cuts the text at a request's stop strings. Kept apart from the engines
(steps/_serve_engines.py) so they and steps/_serving.py, which re-exports all four, import them
without a cycle.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_END = object()


@dataclass(frozen=True)
class GenParams:
    """One request's sampling settings; None means the model's own generation_config value."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """What a finished generation reports: tokens generated, and whether it ended by itself."""

    completion_tokens: int
    stopped: bool  # an end-of-turn/eos token or a stop string ended it; False: max_new_tokens did



class StopTrimmer:
    """Cuts streamed text at the first stop string, holding back what could be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buf, self.stopped = "", False

    def feed(self, text: str) -> str:
        """The part of the text seen so far that is safe to send."""
        if self.stopped:
            return ""
        self.buf += text
        cuts = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if cuts:
            out, self.buf, self.stopped = self.buf[: min(cuts)], "", True
            return out
        n = max(0, len(self.buf) - self.hold)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def flush(self) -> str:
        """What was held back, once the generation has ended without a stop string."""
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


class Run:
    """One generation in a daemon thread: iterate it for text pieces, then read ``result``.

    ``work(emit, cancelled)`` generates, calling ``emit(text)`` per piece, and returns a
    Generation; ``on_done`` runs when the thread ends whatever happened (it frees the slot).
    """

    def __init__(self, work: Callable[[Callable[[str], None], threading.Event], Generation], on_done: Callable[[], None]) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.result: Generation | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(work, on_done), name="tunegate-generate", daemon=True)
        self._thread.start()

    def _main(self, work: Callable[..., Generation], on_done: Callable[[], None]) -> None:
        try:
            self.result = work(self._q.put, self.cancelled)
        except BaseException as exc:  # handed to the reader, who reports it
            self.error = exc
        finally:
            self._q.put(_END)
            on_done()

    def __iter__(self) -> Iterator[str]:
        while (item := self._q.get()) is not _END:
            yield item
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Ask the generation to stop at its next token (the client went away)."""
        self.cancelled.set()

    def join(self, timeout: float | None = None) -> Generation | None:
        """Wait for the generation thread; its result (None if it failed or is still running)."""
        self._thread.join(timeout)
        return self.result

