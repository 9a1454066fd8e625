"""A constant-plus-linear step cost, for tests and queueing-theory checks.

``step_s + prefill_token_s * prefill tokens + decode_seq_s * decodes``: with the last two at
zero every step costs the same, which turns a replica with ``max_num_seqs = 1`` into an M/D/1
server and one with ``max_num_seqs = c`` into c parallel servers.
"""

from __future__ import annotations

from sim.costs.base import StepLine, StepShape


class ConstantCostModel:
    name = "constant"

    def __init__(self, step_s: float, prefill_token_s: float = 0.0, decode_seq_s: float = 0.0):
        self.step_s_const = step_s
        self.prefill_token_s = prefill_token_s
        self.decode_seq_s = decode_seq_s

    def step_s(self, shape: StepShape) -> float:
        return (
            self.step_s_const + self.prefill_token_s * shape.num_prefill_tokens + self.decode_seq_s * shape.num_decode
        )

    def decode_line(self, num_decode: int) -> StepLine:
        return StepLine([(self.step_s_const + self.decode_seq_s * num_decode, 0.0)])
