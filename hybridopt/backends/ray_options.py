"""Options of ``backend="ray"``, checked without importing Ray."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridopt.backends.local import check_method, check_number


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Options of ``backend="ray"`` (``backend_options`` of the optimizer)."""

    num_actors: int | None = None
    """Actors to start; None = the cluster's CPUs // ``cpus_per_actor`` (and GPUs //
    ``gpus_per_actor`` when that is set), at least 1."""
    cpus_per_actor: float = 1
    """CPUs Ray reserves for each actor; also its torch threads (rounded, at least 1)."""
    gpus_per_actor: float = 0
    """GPUs Ray reserves for each actor; an actor given a GPU evaluates on CUDA."""
    method: str = "vmap"
    """How each actor computes actions: "vmap", "loop" or "auto" (measured per actor)."""
    max_retries: int = 3
    """Times a shard is re-run after its actor failed; also how many times each lost actor is
    replaced by a fresh one."""
    timeout: float = 600.0
    """Seconds an actor may take to score one shard before it counts as lost."""
    start_timeout: float = 120.0
    """Seconds to wait for the first actor to start (at start-up, or for a replacement when
    no actor is left) before ``RuntimeError``; actors that start later join between
    generations."""
    ship_code: bool = True
    """Pickle the model's and score function's modules by value when only the driver can
    import them (see :mod:`hybridopt.backends.ray_code`); False: every node imports them."""
    init_options: dict = field(default_factory=dict)
    """Extra keyword arguments for ``ray.init`` when the backend starts or connects to Ray."""

    def __post_init__(self) -> None:
        check_number("RayOptions", "num_actors", self.num_actors, 1, integer=True,
                     allow_none=True)
        check_number("RayOptions", "cpus_per_actor", self.cpus_per_actor, 0, strict=True)
        check_number("RayOptions", "gpus_per_actor", self.gpus_per_actor, 0)
        check_method("RayOptions", self.method)
        check_number("RayOptions", "max_retries", self.max_retries, 0, integer=True)
        check_number("RayOptions", "timeout", self.timeout, 0, strict=True)
        check_number("RayOptions", "start_timeout", self.start_timeout, 0, strict=True)
        if not isinstance(self.ship_code, bool):
            raise ValueError(
                f"RayOptions.ship_code must be True or False; got ship_code = {self.ship_code!r}."
            )
        if not isinstance(self.init_options, dict):
            raise ValueError(
                f"RayOptions.init_options must be a dict of ray.init arguments; "
                f"got init_options = {self.init_options!r}."
            )

    @property
    def threads(self) -> int:
        """Torch threads of each actor: ``cpus_per_actor`` rounded, at least 1."""
        return max(1, round(self.cpus_per_actor))
