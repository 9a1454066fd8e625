"""An image or video request as a diffusion replica sees it.

Its shape is fixed on arrival: resolution, frames, denoising steps, images per prompt and
whether classifier-free guidance doubles its rows. State during generation is the step it has
reached (and the last checkpointed step), never a growing cache. Timing fields are written
by the replica engine and read by the metrics recorder.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.status import RequestStatus


@dataclass(slots=True, eq=False)
class ImageRequest:
    request_id: int
    class_id: int
    arrival_s: float
    width: int
    height: int
    frames: int
    """1 for an image."""
    steps: int
    images: int
    """Images per prompt: latents generated together."""
    cfg: bool
    deterministic: bool
    """Deterministic sampler: a retry resumes from the last checkpoint (same noise, same image)."""
    tokens: int
    """Latent tokens per row (the model's latent_tokens of this shape)."""
    mem_bytes: float = 0.0
    """GPU memory the request holds while in a batch (latents, activations, VAE workspace)."""

    # -- replica state
    status: RequestStatus = RequestStatus.WAITING
    steps_done: int = 0
    """Denoising steps completed in the current attempt's latent."""
    checkpoint_step: int = 0
    """Last saved step: where a deterministic retry resumes."""
    steps_computed: int = 0
    """Denoising steps computed over all attempts (exceeds ``steps`` after a restart)."""
    num_retries: int = 0

    # -- timing, written by the engine
    replica: int = -1
    seen_in_system: int = -1
    queued_s: float = -1.0
    """When it last joined a replica's queue (arrival, or re-routing after a fault)."""
    first_scheduled_s: float = -1.0
    """Start of the batch that first ran it."""
    forming_s: float = 0.0
    """Time spent waiting for a batch to fill while a replica was free."""
    first_preview_s: float = -1.0
    finish_s: float = -1.0
    gpu_s: float = 0.0
    reject_reason: str = ""
    fail_reason: str = ""
    on_done: object = None
    """Called with the request when it finishes, is rejected or fails (pipelines)."""
    parent: object = None
    stage: int = -1

    @property
    def rows(self) -> int:
        """Denoiser rows per step: one latent per image, twice with guidance."""
        return self.images * (2 if self.cfg else 1)

    @property
    def remaining_steps(self) -> int:
        return self.steps - self.steps_done

    @property
    def shape_key(self) -> tuple[int, int, int, int]:
        """The bucket a static batch shares: resolution, frames and the steps still to run."""
        return (self.width, self.height, self.frames, self.steps - self.steps_done)
