"""Run engine steps of the Llama replica the way a production engine runs them on a GPU.

vLLM v1's default on a GPU is *piecewise CUDA graphs*: everything between two attention calls
(a layer's output projection and MLP, then the next layer's norm, q/k/v projection and RoPE) is
captured once per padded token count and replayed, while attention, whose shapes change every
step, runs eagerly as one variable-length kernel per layer (vLLM docs, "CUDA Graphs": piecewise
compilation, ``cudagraph_capture_sizes``). ``ModelRunner`` does the same with plain torch:

- **Pieces.** A step is L + 1 pieces around L attention calls. Piece 0 embeds the ids, looks up
  RoPE and runs layer 0 up to attention; piece i runs layer i-1 after attention and layer i up
  to it; piece L ends the last layer. Pieces read and write fixed buffers (ids, positions, the
  residual stream, q/k/v, the attention output) padded to a bucket of token rows, so the same
  code runs eagerly (any device) or as captured graphs (CUDA).
- **Buckets.** A step of n tokens runs at the smallest capture size >= n (padding rows compute
  garbage nobody reads: every piece is row-wise); a step above the largest size runs eagerly.
- **Attention** is ``attend_varlen`` on CUDA (one FlashAttention kernel per layer for the whole
  batch) and ``attend`` elsewhere.
- **Times.** Each step returns its host time to prepare inputs, to launch the work, and the
  wait for the sampled ids to reach the host; on CUDA also the device time between events
  recorded before the first and after the last kernel. A step's fixed host cost (the part that
  does not shrink with the batch) is then measured, not assumed.

``check`` compares, on the device, varlen attention with ``attend`` and graph replay with the
eager pieces; whatever disagrees (or fails) is turned off and the reason kept in ``notes``, so a
GPU run never serves on a path that computes something else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from calibration.models.llama import KVCache, LlamaModel, SeqSlice, attend, attend_varlen, varlen_plan

CAPTURE_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""Token counts captured as graphs (vLLM captures 1, 2, 4 and multiples of 8 up to 512)."""


@dataclass
class StepTimes:
    prepare_s: float
    """Host: input tensors and the attention plan."""
    launch_s: float
    """Host: issuing every kernel (graph replays, attention, head)."""
    sync_s: float
    """Host: waiting for the sampled ids (on CUDA, the device finishing the step's work)."""
    device_s: float = float("nan")
    """CUDA: event time from before the first kernel to after the last (NaN elsewhere)."""
    bucket: int = 0
    """Token rows the step ran at (0: eager, unpadded)."""


@dataclass
class ModelRunner:
    net: LlamaModel
    cache: KVCache
    attention: str = "auto"
    """"varlen" (CUDA), "per_sequence", or "auto" (varlen on CUDA)."""
    cuda_graphs: bool | None = None
    """Capture piecewise graphs (None: on CUDA)."""
    capture_sizes: tuple[int, ...] = CAPTURE_SIZES
    max_tokens: int = 512
    """The largest step the engine runs (its token budget): buffers are sized for it."""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        net = self.net
        cuda = net.device.type == "cuda"
        if self.attention == "auto":
            self.attention = "varlen" if cuda else "per_sequence"
        if self.attention not in ("varlen", "per_sequence"):
            raise ValueError(f"attention must be varlen, per_sequence or auto, got {self.attention!r}")
        if self.cuda_graphs is None:
            self.cuda_graphs = cuda
        self.capture_sizes = tuple(sorted(b for b in self.capture_sizes if b <= self.max_tokens))
        cfg, dev, dt = net.cfg, net.device, net.embed_tokens.weight.dtype
        n, d, h = max(self.max_tokens, *self.capture_sizes, 1), cfg.hidden_size, cfg.head_dim
        self._ids = torch.zeros(n, dtype=torch.long, device=dev)
        self._pos = torch.zeros(n, dtype=torch.long, device=dev)
        self._x = torch.zeros(n, d, dtype=dt, device=dev)
        self._cos = torch.zeros(n, h, dtype=dt, device=dev)
        self._sin = torch.zeros(n, h, dtype=dt, device=dev)
        self._q = torch.zeros(n, cfg.num_heads, h, dtype=dt, device=dev)
        self._k = torch.zeros(n, cfg.num_kv_heads, h, dtype=dt, device=dev)
        self._v = torch.zeros(n, cfg.num_kv_heads, h, dtype=dt, device=dev)
        self._attn = torch.zeros(n, cfg.num_heads * h, dtype=dt, device=dev)
        self._graphs: dict[int, list] = {}
        self._cuda = cuda

    # -- pieces ---------------------------------------------------------------------------

    def _pre(self, i: int, x: torch.Tensor, nb: int) -> None:
        q, k, v = self.net.layers[i].pre_attention(x, self._cos[:nb], self._sin[:nb])
        self._q[:nb].copy_(q)
        self._k[:nb].copy_(k)
        self._v[:nb].copy_(v)

    def _piece(self, j: int, nb: int) -> None:
        """Piece ``j`` of a step padded to ``nb`` rows (reads and writes the fixed buffers)."""
        net = self.net
        if j == 0:
            x = net.embed_tokens(self._ids[:nb])
            cos, sin = net.rope(self._pos[:nb])
            self._cos[:nb].copy_(cos)
            self._sin[:nb].copy_(sin)
        else:
            x = net.layers[j - 1].post_attention(self._x[:nb], self._attn[:nb])
        self._x[:nb].copy_(x)
        if j < net.num_layers:
            self._pre(j, self._x[:nb], nb)

    def _bucket(self, n: int) -> int:
        for b in self.capture_sizes:
            if b >= n:
                return b
        return 0

    def capture(self) -> None:
        """Capture every bucket's pieces as CUDA graphs sharing one memory pool (largest first, as
        vLLM does). A failure leaves graphs off and says why in ``notes``."""
        if not (self.cuda_graphs and self._cuda):
            return
        try:
            with torch.inference_mode():
                pool = torch.cuda.graph_pool_handle()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up outside capture: cuBLAS handles, workspaces
                    for nb in self.capture_sizes:
                        for j in range(self.net.num_layers + 1):
                            self._piece(j, nb)
                torch.cuda.current_stream().wait_stream(side)
                torch.cuda.synchronize()
                for nb in sorted(self.capture_sizes, reverse=True):
                    graphs = []
                    for j in range(self.net.num_layers + 1):
                        g = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(g, pool=pool):
                            self._piece(j, nb)
                        graphs.append(g)
                    self._graphs[nb] = graphs
                torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - any failure means: serve without graphs
            self._graphs.clear()
            self.cuda_graphs = False
            self.notes.append(f"CUDA graph capture failed, steps run eagerly: {type(exc).__name__}: {exc}")

    # -- a step ----------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, token_ids: list[int], seqs: list[SeqSlice], *, graphs: bool = True) -> torch.Tensor:
        """Hidden states [n, d] after the last layer (the model's ``forward``, run in pieces)."""
        n = len(token_ids)
        if n != sum(s.num_new for s in seqs):
            raise ValueError(f"{n} token ids for {sum(s.num_new for s in seqs)} new tokens")
        if n > self._ids.shape[0]:
            raise ValueError(f"a step of {n} tokens is above the runner's {self._ids.shape[0]}")
        nb = self._bucket(n) if graphs and self._graphs else 0
        rows = nb or n
        pos = torch.cat([torch.arange(s.num_cached, s.num_cached + s.num_new) for s in seqs])
        ids = torch.tensor(token_ids, dtype=torch.long)
        if rows > n:  # padding rows: token 0 at position 0
            ids = torch.cat((ids, ids.new_zeros(rows - n)))
            pos = torch.cat((pos, pos.new_zeros(rows - n)))
        self._ids[:rows].copy_(ids, non_blocking=True)
        self._pos[:rows].copy_(pos, non_blocking=True)
        plan = varlen_plan(seqs, self.cache) if self.attention == "varlen" else None
        self._prepared = time.perf_counter()
        run = self._graphs[nb] if nb else None
        for j in range(self.net.num_layers + 1):
            if run is not None:
                run[j].replay()
            else:
                self._piece(j, rows)
            if j < self.net.num_layers:
                q, k, v = self._q[:n], self._k[:n], self._v[:n]
                if plan is None:
                    a = attend(q, k, v, seqs, self.cache, j)
                else:
                    a = attend_varlen(q, k, v, plan, self.cache, j)
                self._attn[:n].copy_(a)
        self._bucket_used = nb
        return self._x[:n]

    @torch.inference_mode()
    def step(self, token_ids: list[int], seqs: list[SeqSlice]) -> tuple[list[int], StepTimes]:
        """One engine step: the sampled id of each sequence (host list) and the step's times."""
        t0 = time.perf_counter()
        ev = None
        if self._cuda:
            ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            ev[0].record()
        x = self.forward(token_ids, seqs)
        sampled = self.net.head(x[self.net.last_rows(seqs)])
        if ev is not None:
            ev[1].record()
        t2 = time.perf_counter()
        out = sampled.tolist()  # the host sync
        t3 = time.perf_counter()
        device_s = ev[0].elapsed_time(ev[1]) / 1e3 if ev is not None else float("nan")
        return out, StepTimes(self._prepared - t0, t2 - self._prepared, t3 - t2, device_s, self._bucket_used)

    # -- self-check ------------------------------------------------------------------------

    @torch.inference_mode()
    def check(self, rtol: float = 0.05) -> dict:
        """Compare, on this device, the serving paths with the reference (``attend``, eager
        pieces) on one mixed step; turn off what disagrees. Returns what was compared."""
        net, cache = self.net, self.cache
        seqs = [SeqSlice(-1, 1, 37), SeqSlice(-2, 5, 0), SeqSlice(-3, 1, 3), SeqSlice(-4, 4, 9)]
        ids = torch.randint(0, net.cfg.vocab_size, (sum(s.num_new for s in seqs),)).tolist()
        for s in seqs:
            cache.allocate(s.seq_id, s.num_cached + s.num_new)
            cache.fill_random(s.seq_id, s.num_cached)
        result: dict = {}
        try:
            want = net.forward(torch.tensor(ids, device=net.device), seqs, cache, "per_sequence").float()
            scale = want.abs().max().item() or 1.0

            def err(got: torch.Tensor) -> float:
                return (got.float() - want).abs().max().item() / scale

            if self.attention == "varlen":
                try:
                    result["varlen_max_rel_error"] = err(
                        net.forward(torch.tensor(ids, device=net.device), seqs, cache, "varlen")
                    )
                    ok = result["varlen_max_rel_error"] <= rtol
                except Exception as exc:  # noqa: BLE001
                    ok, result["varlen_error"] = False, f"{type(exc).__name__}: {exc}"
                if not ok:
                    self.attention = "per_sequence"
                    self.notes.append(f"varlen attention disagreed with the reference ({result}); using attend")
            result["pieces_max_rel_error"] = err(self.forward(ids, seqs, graphs=False))
            if self._graphs:
                result["graphs_max_rel_error"] = err(self.forward(ids, seqs, graphs=True))
                if not result["graphs_max_rel_error"] <= rtol:
                    self._graphs.clear()
                    self.cuda_graphs = False
                    self.notes.append(f"graph replay disagreed with eager pieces ({result}); graphs off")
        finally:
            for s in seqs:
                cache.free(s.seq_id)
        result.update(attention=self.attention, cuda_graphs=bool(self._graphs), notes=list(self.notes))
        return result
