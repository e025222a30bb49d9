"""``backend="ray"``: shards of the population scored by Ray actors, locally or on a cluster.

Each actor holds the model and a :class:`~hybridopt.population.evaluate.PopulationEvaluator`;
the training data goes to the object store once (``ray.put``) and every actor reads it from
there. A generation splits the population into one contiguous shard per live actor, sends each
shard as a numpy array and puts the scores back in order.

Faults cost time, not results. When an actor or its node dies, or a shard outlives
``timeout``, the shard is re-run on another live actor (or on the dead one once Ray has
restarted it, up to ``max_retries`` restarts); shards are scored independently, so the
generation's scores are those of an undisturbed run. A shard that fails more than
``max_retries`` times, or a generation with no actor left, raises ``RuntimeError``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hybridopt.backends.local import (
    Bounds,
    ShardScores,
    Worker,
    WorkerSpec,
    check_method,
    check_number,
    cpu_model,
    merge,
    parse_options,
    shard_bounds,
)
from hybridopt.data import data_to
from hybridopt.scoring import ScoreBatch

log = logging.getLogger(__name__)
PROBE_INTERVAL = 0.25  # seconds between pings of an actor that Ray is restarting


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
    """Times a shard is re-run after its actor failed; also each actor's Ray restarts."""
    timeout: float = 600.0
    """Seconds an actor may take to start, or to score one shard, before it counts as lost."""
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
        if not isinstance(self.init_options, dict):
            raise ValueError(
                f"RayOptions.init_options must be a dict of ray.init arguments; "
                f"got init_options = {self.init_options!r}."
            )


class RayWorker(Worker):
    """A :class:`Worker` inside a Ray actor: on CUDA when Ray gave it a GPU."""

    def __init__(self, spec: WorkerSpec, data, use_gpu: bool, num_threads: int) -> None:
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        super().__init__(spec, data, device, num_threads)

    def info(self) -> dict:
        """Where this actor runs: process id, host, node IP address and device."""
        import ray

        return {**super().info(), "node_ip": ray.util.get_node_ip_address()}

    def ping(self) -> bool:
        """True once the actor is up (used to wait for it and to probe a restarted one)."""
        return True


def connect(address: str | None, init_options: dict) -> bool:
    """Make sure this process is connected to Ray; True if this call ran ``ray.init``.

    An existing connection is reused. Otherwise ``address`` (or ``RAY_ADDRESS``) names the
    cluster to join; with neither, a new local Ray is started.
    """
    import ray

    if ray.is_initialized():
        if address:
            log.warning("Ray is already initialised in this process; ignoring address=%r", address)
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, **init_options)
    return True


class RayBackend:
    """Scores population shards with Ray actors; see :class:`RayOptions`.

    Args:
        model: the model (eval mode).
        score_fn: the user's score function.
        score_mode: the Scorer mode chosen on the driver.
        flat: layout of the trainable weights.
        data: the whole training data, put once in Ray's object store.
        address: cluster address; None: ``RAY_ADDRESS``, else a new local Ray.
        chunk_size: individuals per vmap call (None: sized from memory).
        **options: fields of :class:`RayOptions`.

    Raises:
        ValueError: if an option is unknown or has a bad value.
        RuntimeError: if the actors cannot start within ``timeout``.

    Attributes:
        failures: shards lost so far (to a dead actor, a dead node or a timeout).
    """

    def __init__(
        self, *, model, score_fn, score_mode, flat, data, address=None, chunk_size=None,
        **options,
    ) -> None:
        self.options = opts = parse_options("ray", RayOptions, options)
        import ray

        self._ray = ray
        self._started = connect(address, opts.init_options)
        self._live: list[Any] = []  # actors that answer
        self._probes: dict[Any, tuple[Any, float]] = {}  # failed actor -> (ping ref, next ping)
        self._actor_failures: dict[Any, int] = {}
        self.failures = 0
        try:
            spec = WorkerSpec(
                model=cpu_model(model), score_fn=score_fn, score_mode=score_mode, flat=flat,
                method=opts.method, chunk_size=chunk_size,
            )
            self._spec_ref = ray.put(spec)
            self._data_ref = ray.put(data_to(data, "cpu"))
            self._actor_class = ray.remote(RayWorker).options(
                num_cpus=opts.cpus_per_actor,
                num_gpus=opts.gpus_per_actor,
                max_restarts=opts.max_retries,
                max_task_retries=0,  # shards are re-run here, on whichever actor is alive
                scheduling_strategy="SPREAD",
            )
            self._start_actors(opts.num_actors or self._default_actors())
        except BaseException:
            self.close()
            raise

    # -- actors ------------------------------------------------------------------------------

    def _default_actors(self) -> int:
        resources = self._ray.cluster_resources()
        n = resources.get("CPU", 1) // self.options.cpus_per_actor
        if self.options.gpus_per_actor:
            n = min(n, resources.get("GPU", 0) // self.options.gpus_per_actor)
        return max(1, int(n))

    def _start_actors(self, n: int) -> None:
        threads = max(1, round(self.options.cpus_per_actor))
        actors = [
            self._actor_class.remote(
                self._spec_ref, self._data_ref, self.options.gpus_per_actor > 0, threads
            )
            for _ in range(n)
        ]
        self._live = list(actors)
        ready, _ = self._ray.wait(
            [a.ping.remote() for a in actors], num_returns=n, timeout=self.options.timeout
        )
        if len(ready) < n:
            raise RuntimeError(
                f"only {len(ready)} of {n} Ray actors started within {self.options.timeout}s: "
                f"does the cluster have {self.options.cpus_per_actor} CPU and "
                f"{self.options.gpus_per_actor} GPU free for each? (cluster resources: "
                f"{self._ray.cluster_resources()})"
            )
        try:
            self._ray.get(ready)
        except self._ray.exceptions.RayError as err:  # the actors' constructor failed
            raise RuntimeError(
                f"the Ray actors failed to start: {_short(err, 800)}\nThe modules that define "
                "the model and score_fn must be importable on every node (an installed package, "
                "PYTHONPATH, or `ray job submit --working-dir .`)."
            ) from err

    def worker_info(self) -> list[dict]:
        """``{"pid", "host", "node_ip", "device"}`` of each live actor, in shard order."""
        refs = [a.info.remote() for a in self._live]
        return self._ray.get(refs, timeout=self.options.timeout)

    def _lose(self, actor: Any, error: BaseException | str) -> None:
        """Take a failed actor out of the pool; probe it, since Ray may restart it."""
        if actor in self._live:
            self._live.remove(actor)
        self._actor_failures[actor] = self._actor_failures.get(actor, 0) + 1
        if self._actor_failures[actor] > self.options.max_retries:
            self._drop(actor)  # out of restarts
            return
        if isinstance(error, str):  # unresponsive: have Ray restart it
            self._ray.kill(actor, no_restart=False)
        self._probes[actor] = (None, time.monotonic() + PROBE_INTERVAL)

    def _drop(self, actor: Any) -> None:
        """Forget an actor for good."""
        if actor in self._live:
            self._live.remove(actor)
        self._probes.pop(actor, None)
        self._ray.kill(actor, no_restart=True)

    def _poll_probes(self) -> None:
        """Ping failed actors; those that answer are restarted and go back in the pool."""
        ray, now = self._ray, time.monotonic()
        for actor, (probe, due) in list(self._probes.items()):
            if probe is None:
                if now >= due:
                    self._probes[actor] = (actor.ping.remote(), due)
                continue
            if not ray.wait([probe], timeout=0)[0]:
                continue  # still restarting (or waiting for resources)
            try:
                ray.get(probe)
            except ray.exceptions.ActorUnavailableError:  # restarting: ask again later
                self._probes[actor] = (None, now + PROBE_INTERVAL)
            except ray.exceptions.RayError as err:
                log.warning("a Ray actor is gone for good (%s)", _short(err))
                self._drop(actor)
            else:
                del self._probes[actor]
                self._live.append(actor)
                log.info("a restarted Ray actor is back (%d live)", len(self._live))

    def _pick(self, busy: dict[Any, int]) -> Any:
        """A live actor for a re-run: the least busy, waiting for a restart if none is live."""
        deadline = time.monotonic() + self.options.timeout
        self._poll_probes()
        while not self._live and self._probes and time.monotonic() < deadline:
            pending = [probe for probe, _ in self._probes.values() if probe is not None]
            if pending:
                self._ray.wait(pending, num_returns=1, timeout=PROBE_INTERVAL)
            else:
                time.sleep(PROBE_INTERVAL)
            self._poll_probes()
        if not self._live:
            raise RuntimeError(
                f"no Ray worker left: all actors died or stopped answering "
                f"({self.failures} shards lost, max_retries={self.options.max_retries})."
            )
        return min(self._live, key=lambda a: busy.get(a, 0))

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self, population: Tensor, bounds: Bounds) -> ScoreBatch:
        """Scores ``[P]`` of ``population`` on rows ``bounds`` of the data, in order.

        Raises:
            RuntimeError: if a shard failed more than ``max_retries`` times, or no actor is
                left.
            Exception: an error raised by ``score_fn`` or the model inside an actor.
        """
        ray = self._ray
        host = population.detach().cpu().numpy()
        self._poll_probes()
        if not self._live:
            self._pick({})
        pieces = shard_bounds(len(host), len(self._live))
        results: list[ShardScores | None] = [None] * len(pieces)
        attempts = [0] * len(pieces)
        pending: dict[Any, tuple[int, Any, float]] = {}  # ref -> (shard, actor, deadline)

        def submit(i: int, actor: Any) -> None:
            a, b = pieces[i]
            ref = actor.evaluate.remote(host[a:b], bounds)
            pending[ref] = (i, actor, time.monotonic() + self.options.timeout)

        for i, actor in enumerate(self._live[: len(pieces)]):
            submit(i, actor)
        while pending:
            wait_s = max(0.0, min(d for _, _, d in pending.values()) - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if ready:
                ref = ready[0]
                i, actor, _ = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                    continue
                except ray.exceptions.RayTaskError:
                    raise  # score_fn or the model failed: re-running would fail the same way
                except ray.exceptions.RayError as err:
                    error: BaseException | str = err
            else:  # the oldest shard ran out of time: its actor counts as lost
                ref = min(pending, key=lambda r: pending[r][2])
                i, actor, _ = pending.pop(ref)
                error = f"no answer within timeout={self.options.timeout}s"
            # Fault: re-run the shard elsewhere
            self.failures += 1
            attempts[i] += 1
            log.warning("Ray shard %d lost (%s); re-running it", i, _short(error))
            self._lose(actor, error)
            if attempts[i] > self.options.max_retries:
                raise RuntimeError(
                    f"shard {i} of the population (individuals {pieces[i][0]}:{pieces[i][1]}) "
                    f"failed {attempts[i]} times (max_retries={self.options.max_retries}); "
                    f"last error: {_short(error)}"
                )
            busy: dict[Any, int] = {}
            for _, a, _ in pending.values():
                busy[a] = busy.get(a, 0) + 1
            submit(i, self._pick(busy))
        return merge(results)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop the actors; stop Ray too if this backend started it (a cluster stays up)."""
        ray = self._ray
        if ray.is_initialized():
            for actor in [*self._live, *self._probes]:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception as err:  # already gone
                    log.debug("could not kill a Ray actor: %s", err)
        self._live, self._probes = [], {}
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(error: BaseException | str, limit: int = 300) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

