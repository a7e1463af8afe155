"""One generation as the server runs it: its settings, its result, its thread, and stop strings.

``GenParams`` is what a request asks for, ``Generation`` what a finished generation reports,
``Run`` one generation's text pieces as they come (fed by the batch scheduler, steps/serving/batching.py,
or by a thread of its own, ``Run.in_thread``) and ``StopTrimmer`` cuts the text at a request's stop strings.
Kept apart from the engines
(steps/serving/engines.py) so they and steps/serving/backend.py import them
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
    grammar: Any = None  # an xgrammar CompiledGrammar the reply must match (response_format, a forced tool call)
    schema: Any = None  # the JSON schema that grammar was compiled from (for engines that compile their own)


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
    """One generation's text pieces, as they come, and its result: iterate it for the pieces, then read ``result``.

    Whoever generates calls ``emit(text)`` per piece and ``finish(result)`` (or ``finish(error=...)``) once;
    ``on_done`` runs then, whatever happened (it frees the request's slot). ``cancel()`` asks the
    generator to stop at its next token.
    """

    def __init__(self, on_done: Callable[[], None]) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.result: Generation | None = None
        self.error: BaseException | None = None
        self._done, self._on_done, self._lock = threading.Event(), on_done, threading.Lock()

    @classmethod
    def in_thread(cls, work: Callable[[Callable[[str], None], threading.Event], Generation], on_done: Callable[[], None]) -> Run:
        """A Run fed by ``work(emit, cancelled)`` in a daemon thread of its own; its return value is the result."""
        run = cls(on_done)

        def main() -> None:
            try:
                result = work(run.emit, run.cancelled)
            except BaseException as exc:  # handed to the reader, who reports it
                run.finish(error=exc)
            else:
                run.finish(result)

        threading.Thread(target=main, name="tunegate-generate", daemon=True).start()
        return run

    def emit(self, text: str) -> None:
        self._q.put(text)

    def finish(self, result: Generation | None = None, error: BaseException | None = None) -> None:
        """The generation ended: its result, or the error that ended it (only the first call counts)."""
        with self._lock:
            if self._done.is_set():
                return
            self.result, self.error = result, error
            self._done.set()
        self._q.put(_END)
        self._on_done()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def __iter__(self) -> Iterator[str]:
        while (item := self._q.get()) is not _END:
            yield item
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Ask the generation to stop at its next token (the client went away)."""
        self.cancelled.set()

    def join(self, timeout: float | None = None) -> Generation | None:
        """Wait for the generation to end; its result (None if it failed or is still running)."""
        self._done.wait(timeout)
        return self.result
