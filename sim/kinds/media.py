"""Token-media requests: an image (``ar_image``) or a clip of audio (``audio``) written as tokens
by an LLM-style decoder on an LLM pool, then decoded to pixels or a waveform.

Each arrival is a parent row with one text request (the sequence) on the pool, and a second one
beside it under classifier-free guidance (the unconditional sequence, the same lengths, sent to
the same replica: the engine combines their logits every step, so they run together; the pool
needs room for two sequences, ``max_num_seqs`` >= 2). The text requests go through vLLM's
scheduler like any other; the parent finishes when both have, plus what is left to decode: an
image's whole decode, audio's last chunk (the codec decodes chunk by chunk as the tokens
stream). The decoder runs on the same GPU; its time counts in the request's GPU time but does
not hold up the replica's next step (it is small against the token loop:
``docs/explanation/generative-shapes.md``). After a replica failure both sequences start again
(the pool sends the unconditional one after its conditional one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.llm.request import Request
from sim.status import RequestStatus


@dataclass(slots=True, eq=False)
class MediaRequest:
    request_id: int
    class_id: int
    arrival_s: float
    kind: str
    """``ar_image`` or ``audio``."""
    num_prompt_tokens: int
    output_tokens: int
    """Tokens (decoder steps) each sequence generates."""
    sequences: int
    """1, or 2 with classifier-free guidance."""
    decode_s: float
    """The pixel or audio decoder's GPU seconds."""
    first_chunk_tokens: int = 1
    """Tokens before the first row (an image) or the first chunk of audio can be decoded."""
    first_chunk_decode_s: float = 0.0
    """Decoding that first row or chunk."""
    audio_s: float = 0.0
    tail_s: float = -1.0
    """Decoding left after the last token (-1: all of ``decode_s``; audio decodes as it
    streams, so only its last chunk is left)."""
    children: list = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    finish_s: float = -1.0
    reject_reason: str = ""
    fail_reason: str = ""
    _pool: object = None

    def start(self, env, pool, ids, recorder, timeout_s: float | None) -> None:
        self._pool = pool
        self.status = RequestStatus.RUNNING
        for i in range(self.sequences):
            child = Request(next(ids), self.class_id, self.arrival_s, self.num_prompt_tokens, self.output_tokens)
            child.parent = self
            child.stage = i
            child.on_done = self._child_done
            recorder.arrival(child)
            self.children.append(child)
        main = self.children[0]
        pool.route(main)
        for twin in self.children[1:]:
            if main.status == RequestStatus.REJECTED:
                twin.status = RequestStatus.REJECTED
                twin.reject_reason = main.reject_reason
                continue
            if main in pool.pending:  # no replica up: both wait for one
                pool.pending.append(twin)
                continue
            pool.replicas[main.replica - pool.first_index].submit(twin)  # beside its sequence
            if twin.status == RequestStatus.REJECTED:
                self._child_done(twin)
        if timeout_s is not None:
            for child in self.children:
                env.timeout(timeout_s).callbacks.append(lambda _e, c=child: pool.timeout(c, timeout_s))

    def _child_done(self, child) -> None:
        if self.status != RequestStatus.RUNNING:
            return
        if child.status == RequestStatus.REJECTED:
            self.status = RequestStatus.REJECTED
            self.reject_reason = child.reject_reason
            self._abandon(child, f"its {'unconditional ' if child.stage else ''}sequence was rejected")
        elif child.status != RequestStatus.FINISHED:
            self.status = RequestStatus.ABORTED
            self.fail_reason = child.fail_reason
            self._abandon(child, f"its other sequence failed: {child.fail_reason}")
        elif all(c.status == RequestStatus.FINISHED for c in self.children):
            self.status = RequestStatus.FINISHED
            tail = self.decode_s if self.tail_s < 0 else self.tail_s
            self.finish_s = max(c.finish_s for c in self.children) + tail
            self.children[0].gpu_s += self.decode_s * self._pool.replicas[0].num_gpus

    def _abandon(self, done, reason: str) -> None:
        """Give up the other sequence of a request that will not finish."""
        for c in self.children:
            if c is done or c.status in (RequestStatus.FINISHED, RequestStatus.REJECTED) or c.fail_reason:
                continue
            pool = self._pool
            i = c.replica - pool.first_index
            if c in pool.pending:
                pool.pending.remove(c)
                pool.fail_request(c, reason)
            elif c.replica >= 0 and pool.replicas[i].up:
                pool.replicas[i].cancel(c, reason)
            elif c.replica >= 0:
                pool.fail_request(c, reason)  # lost with its replica: not to be retried

    # -- what the summary reads
    @property
    def first_token_s(self) -> float:
        return self.children[0].first_token_s if self.children else -1.0

    @property
    def first_scheduled_s(self) -> float:
        return self.children[0].first_scheduled_s if self.children else -1.0

    @property
    def first_chunk_s(self) -> float:
        """When the first row of the image or chunk of audio is decoded: the first token, the
        tokens after it up to the chunk at the sequence's mean inter-token gap, and the chunk's
        decode (-1: not finished)."""
        if self.status != RequestStatus.FINISHED:
            return -1.0
        main = self.children[0]
        n = self.output_tokens
        gap = (main.finish_s - main.first_token_s) / (n - 1) if n > 1 else 0.0
        return main.first_token_s + (min(self.first_chunk_tokens, n) - 1) * gap + self.first_chunk_decode_s

    @property
    def num_retries(self) -> int:
        """Times it started again (its sequences restart together: they count once)."""
        return max((c.num_retries for c in self.children), default=0)

    @property
    def gpu_s(self) -> float:
        return sum(c.gpu_s for c in self.children)

    @property
    def replica(self) -> int:
        return self.children[0].replica if self.children else -1
