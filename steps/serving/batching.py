"""Batching across requests: one scheduler thread decodes every running request together, a token a step.

A request joins the batch between two steps: its prompt is run alone (prefill, its own KV cache), its
first token chosen, and its cache left-padded to the batch's width and stacked onto the batch's
(positions count real tokens only, so the padding changes nothing but the matrix shapes). Each step
feeds every row its last token in one forward pass; each row then picks its own next token with its
own settings (greedy, or temperature / top_k / top_p sampling from its own seeded generator, under
its own JSON grammar when it has one), is streamed its new text, and leaves the batch, KV cache
included, at its stop token, a stop string, its token budget, or when its client has gone. Columns
no row needs any more are cut from the left.

A reply under a JSON grammar that nears its token budget is steered to close: once the tokens left
are within ``CLOSE_SLACK`` of what its open strings, objects and arrays need, whenever the grammar
allows a stop token or a token made only of ``"``, ``}`` and ``]``, it takes the one that leaves the
fewest open (the likeliest of those), else the model's own choice.
SmolLM2 asked for a JSON object otherwise counts digits inside a string until the budget cuts it.
A schema whose required fields do not fit in the budget still ends unclosed (finish_reason length).

Greedy replies do not depend on the company a request keeps: the prompt is computed alone either
way, and a row's decode step sees the same tokens at the same positions; only the shapes of the
matrix products differ, which in float32 moves logits in their last bits (a near tie could break
differently; tests and bench/bench_serve.py check the replies are identical).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from steps.serving.generation import Generation, GenParams, Run

log = logging.getLogger("tunegate.serve")
CLOSE_SLACK = 6  # tokens kept beyond the closing characters: room for a required key, its colon and a short value
_CLOSERS = frozenset(b'"}]')


def open_json(text: str) -> int:
    """The fewest characters that close a JSON prefix: one per open string, object and array."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return depth + in_string


@dataclass(frozen=True)
class Sampling:
    """How one request picks its tokens: greedy, or sampled with these settings (None: not applied)."""

    greedy: bool
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None

    @classmethod
    def of(cls, params: GenParams, defaults: Any) -> Sampling:
        """The request's settings over the model's generation_config ``defaults`` (what transformers would use).

        temperature 0 is greedy; a temperature, or a top_p below 1, samples; neither: the model's do_sample.
        When sampling, the model's own top_k applies too, as it does under ``generate``.
        """
        if params.temperature == 0:
            sample = False
        elif params.temperature is not None or (params.top_p is not None and params.top_p < 1):
            sample = True
        else:
            sample = bool(getattr(defaults, "do_sample", False))
        if not sample:
            return cls(greedy=True)
        temperature = params.temperature if params.temperature is not None else getattr(defaults, "temperature", None) or 1.0
        top_p = params.top_p if params.top_p is not None else getattr(defaults, "top_p", None)
        top_p = top_p if top_p is not None and top_p < 1 else None
        return cls(False, float(temperature), top_p, getattr(defaults, "top_k", None) or None)


@dataclass(eq=False)
class Row:
    """One request in the scheduler: its prompt, settings, grammar state and what it has generated so far."""

    prompt: list[int]
    params: GenParams
    run: Run
    sampling: Sampling
    generator: Any = None  # a torch.Generator seeded with the request's seed; None: torch's global one
    matcher: Any = None  # an xgrammar GrammarMatcher when the reply must match a grammar
    bitmask: Any = None
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # the decoded text of ``tokens`` emitted so far


class Scheduler:
    """The batch: a daemon thread that admits submitted requests between steps and decodes them together.

    Args:
        model: a causal LM (transformers, optionally with a LoRA-style PEFT adapter) in eval mode.
        tokenizer: its tokenizer, used here only to turn tokens into text (the scheduler thread's alone).
        stop_ids: tokens that end a reply.
        defaults: the model's generation_config: the sampling settings when a request names none.
    """

    def __init__(self, model: Any, tokenizer: Any, stop_ids: list[int], defaults: Any) -> None:
        self.model, self.tokenizer, self.stops, self.defaults = model, tokenizer, set(stop_ids), defaults
        self.device = next(model.parameters()).device
        self._inbox: queue.Queue[Row] = queue.Queue()
        self.rows: list[Row] = []
        self.cache: Any = None  # the batch's DynamicCache, rows in the order of self.rows
        self.mask: Any = None  # [rows, width] 1 for real tokens, 0 for left padding
        self.last: list[int] = []  # each row's latest token: the next step's input
        self.steps = 0  # decode steps run (one forward pass each, whatever the batch size)
        self._closers: dict[int, list[tuple[int, str | None]]] = {}  # per vocabulary: tokens of only '"', '}' and ']'
        threading.Thread(target=self._loop, name="tunegate-batch", daemon=True).start()

    def submit(self, prompt_ids: list[int], params: GenParams, run: Run) -> None:
        """Queue a request; it joins the batch before the next step. Its pieces and result arrive on ``run``."""
        import torch

        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed % 2**64)
        matcher = bitmask = None
        if params.grammar is not None:
            import xgrammar as xgr

            matcher = xgr.GrammarMatcher(params.grammar)
            bitmask = xgr.allocate_token_bitmask(1, params.grammar.tokenizer_info.vocab_size)
        self._inbox.put(Row(list(prompt_ids), params, run, Sampling.of(params, self.defaults), generator, matcher, bitmask))

    # ------------------------------------------------------------ the loop
    def _loop(self) -> None:
        import torch

        while True:
            try:
                with torch.inference_mode():
                    if not self.rows:
                        self._admit(self._inbox.get())  # nothing running: wait for work
                    while True:
                        try:
                            self._admit(self._inbox.get_nowait())
                        except queue.Empty:
                            break
                    if self.rows:
                        self._step()
            except BaseException as exc:  # a failed step fails the requests in it, never the scheduler
                log.exception("batched generation failed")
                for row in self.rows:
                    row.run.finish(error=exc)
                self.rows, self.cache, self.mask, self.last = [], None, None, []

    def _admit(self, row: Row) -> None:
        """Prefill ``row``'s prompt alone, pick its first token, and stack its KV cache onto the batch's."""
        import torch
        from transformers import DynamicCache

        if self._finished(row):  # its client left while it was queued
            return
        try:
            ids = torch.tensor([row.prompt], device=self.device)
            cache = DynamicCache()
            positions = torch.arange(ids.shape[1], device=self.device)[None]
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions, past_key_values=cache,
                             use_cache=True, logits_to_keep=1)  # fmt: skip
            token = self._choose([row], out.logits[:, -1].float())[0]
            if self._accept(row, token):
                return
        except Exception as exc:
            log.exception("prefill failed")
            row.run.finish(error=exc)
            return
        self._join(row, cache, len(row.prompt), token)

    def _join(self, row: Row, cache: Any, length: int, token: int) -> None:
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if self.cache is None:
            self.rows, self.cache, self.mask, self.last = [row], cache, mask, [token]
            return
        width = max(self.mask.shape[1], length)

        def pad(t: Any, dim_from_end: int) -> Any:  # left-pad the sequence axis to ``width`` with zeros (masked out)
            n = width - t.shape[-dim_from_end]
            return F.pad(t, (0, 0) * (dim_from_end - 1) + (n, 0)) if n else t

        merged = DynamicCache()
        for i, (have, new) in enumerate(zip(self.cache.layers, cache.layers)):
            keys, values = torch.cat([pad(have.keys, 2), pad(new.keys, 2)]), torch.cat([pad(have.values, 2), pad(new.values, 2)])
            merged.update(keys, values, i)
        self.cache, self.mask = merged, torch.cat([pad(self.mask, 1), pad(mask, 1)])
        self.rows, self.last = [*self.rows, row], [*self.last, token]

    def _step(self) -> None:
        """One forward pass for every row; each row takes its next token, and finished rows leave."""
        import torch

        live = [i for i, row in enumerate(self.rows) if not self._finished(row)]
        if len(live) < len(self.rows):
            self._keep(live)
            if not self.rows:
                return
        mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        tokens = torch.tensor(self.last, device=self.device)[:, None]
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                         past_key_values=self.cache, use_cache=True)  # fmt: skip
        self.mask, self.steps = mask, self.steps + 1
        chosen = self._choose(self.rows, out.logits[:, -1].float())
        keep = [i for i, (row, t) in enumerate(zip(self.rows, chosen)) if not self._accept(row, t)]
        self.last = chosen
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _keep(self, keep: list[int]) -> None:
        """Only the rows ``keep`` stay (KV cache too); columns that are padding in every row left are cut."""
        import torch

        if not keep:
            self.rows, self.cache, self.mask, self.last = [], None, None, []
            return
        self.cache.batch_select_indices(torch.tensor(keep, device=self.device))
        self.rows, self.mask, self.last = [self.rows[i] for i in keep], self.mask[keep], [self.last[i] for i in keep]
        first = int((self.mask.sum(0) > 0).nonzero()[0])
        if first:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    # ------------------------------------------------------------ per row
    def _choose(self, rows: list[Row], logits: Any) -> list[int]:
        """Each row's next token from its logits row: greedy or sampled, under its grammar if it has one."""
        import torch

        greedy = logits.argmax(-1).tolist()
        out = []
        for r, row in enumerate(rows):
            if row.matcher is None and row.sampling.greedy:
                out.append(greedy[r])
                continue
            scores = logits[r : r + 1]
            if row.matcher is not None:
                import xgrammar as xgr

                row.matcher.fill_next_token_bitmask(row.bitmask)
                xgr.apply_token_bitmask_inplace(scores, row.bitmask.to(scores.device))
                if row.params.max_new_tokens - len(row.tokens) <= open_json(row.text) + CLOSE_SLACK:  # steer it to close
                    allowed = torch.isfinite(scores[0]).tolist()
                    candidates = self._closing(row.params.grammar.tokenizer_info)
                    closing = [(open_json(row.text + piece) if piece is not None else -1, -float(scores[0, i]), i)
                               for i, piece in candidates if i < len(allowed) and allowed[i]]  # fmt: skip
                    if closing:
                        out.append(min(closing)[2])
                        continue
            if row.sampling.greedy:
                out.append(int(scores.argmax()))
                continue
            out.append(int(torch.multinomial(self._probs(scores[0], row.sampling), 1, generator=row.generator)))
        return out

    def _closing(self, info: Any) -> list[tuple[int, str | None]]:
        """The tokens made only of closing characters, with their text, and the stop tokens (text None); once per vocabulary."""
        if id(info) not in self._closers:
            pieces = [(i, bytes(b).decode()) for i, b in enumerate(info.decoded_vocab) if b and all(c in _CLOSERS for c in b)]
            self._closers[id(info)] = [*pieces, *((i, None) for i in info.stop_token_ids)]
        return self._closers[id(info)]

    @staticmethod
    def _probs(scores: Any, s: Sampling) -> Any:
        """Sampling probabilities: temperature, then top_k, then top_p (the smallest set reaching it), as transformers does."""
        import torch

        scores = scores / s.temperature
        if s.top_k and s.top_k < scores.shape[-1]:
            scores = scores.masked_fill(scores < torch.topk(scores, s.top_k).values[-1], float("-inf"))
        probs = torch.softmax(scores, -1)
        if s.top_p is not None:
            ordered, order = probs.sort(descending=True)
            drop = ordered.cumsum(-1) - ordered > s.top_p  # the tokens after the set that reached top_p
            probs = probs.scatter(0, order, ordered.masked_fill(drop, 0.0))
        return probs

    def _accept(self, row: Row, token: int) -> bool:
        """Add ``token`` to ``row``, stream its new text; True when the row has finished (and is answered)."""
        row.tokens.append(token)
        if row.matcher is not None and not row.matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token}, which its own mask allowed")
        if token in self.stops:
            return self._end(row, stopped=True)
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # a character cut between tokens waits for its other bytes
            before, row.text = len(row.text), text
            if piece := text[before:]:
                row.run.emit(piece)
            longest = max((len(s) for s in row.params.stop), default=0)
            if longest and any(s in text[max(0, before - longest + 1) :] for s in row.params.stop):
                return self._end(row, stopped=True)
        if len(row.tokens) >= row.params.max_new_tokens:
            return self._end(row, stopped=False)
        return self._finished(row)

    def _finished(self, row: Row) -> bool:
        """A row whose client has gone ends here (reported as stopped, as an early stop always was)."""
        return row.run.done or (row.run.cancelled.is_set() and self._end(row, stopped=True))

    @staticmethod
    def _end(row: Row, stopped: bool) -> bool:
        row.run.finish(Generation(completion_tokens=len(row.tokens), stopped=stopped))
        return True
