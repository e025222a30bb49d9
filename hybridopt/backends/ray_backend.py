"""``backend="ray"``: shards of the population scored by Ray actors, locally or on a cluster.

Each actor holds the model and a :class:`~hybridopt.population.evaluate.PopulationEvaluator`;
the training data goes to the object store once (``ray.put``) and every actor reads it from
there. A generation splits the population into one contiguous shard per live actor, sends each
shard as a numpy array and puts the scores back in order. Each actor runs torch with one
thread per CPU it was given (``cpus_per_actor``, rounded, at least 1).

The user's code travels with the model: the modules that define the model's classes and the
score function, when only the driver can import them, are pickled by value (see
:mod:`hybridopt.backends.ray_code` for why this and not a ``runtime_env``).

Faults cost time, not results, at any moment:

* Start-up waits for the actors for at most ``start_timeout``, and once one is up the others
  get as long again as it took, but at least 10 s; the fit then starts with the actors that
  are up, and those still starting (on a node that died, or waiting for resources that appear
  later) join between generations. With none up by ``start_timeout``, ``RuntimeError`` names
  the resources asked for and those the cluster has.
* When an actor or its node dies, or a shard outlives ``timeout``, the shard is re-run on
  another live actor, and the lost actor is replaced by a fresh one (up to ``max_retries``
  times per actor), which joins when it is up. Shards are scored independently, so the
  generation's scores are those of an undisturbed run. A shard that fails more than
  ``max_retries`` times, or a generation with no actor left, raises ``RuntimeError``.

Replacements are made here rather than by Ray's own actor restarts (``max_restarts``): a Ray
restart re-runs the constructor from its arguments in the object store, which Ray reports as
an error on every actor it creates ("constructor arguments in the object store and
max_restarts > 0"), and it cannot re-place an actor whose creation never finished. Here the
backend holds the model's and the data's object references for as long as it lives, so a
replacement can always be built from them, anywhere the cluster has room.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from typing import Any

import torch
from torch import Tensor

from hybridopt.backends.local import (
    Bounds,
    ShardScores,
    Worker,
    WorkerSpec,
    cpu_model,
    merge,
    parse_options,
    shard_bounds,
)
from hybridopt.backends.ray_options import RayOptions
from hybridopt.data import data_to
from hybridopt.scoring import ScoreBatch

log = logging.getLogger(__name__)
STRAGGLER_WAIT = 10.0  # seconds the other actors get at least once the first is up


class RayWorker(Worker):
    """A :class:`Worker` inside a Ray actor: on CUDA when Ray gave it a GPU."""

    def __init__(self, spec: WorkerSpec, data, use_gpu: bool, num_threads: int) -> None:
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        super().__init__(spec, data, device, num_threads)

    def info(self) -> dict:
        """Where this actor runs: process id, host, node IP address, device, precision, torch
        threads."""
        import ray

        return {**super().info(), "node_ip": ray.util.get_node_ip_address(),
                "threads": torch.get_num_threads()}

    def ping(self) -> bool:
        """True once the actor is up (the backend waits for this answer)."""
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
        objectives: None, or the objective names (or their number M) the workers' scorers
            use; the batches then carry ``objectives [P, M]``.
        precision: the workers' forward passes (``WorkerSpec.precision``).
        **options: fields of :class:`RayOptions`.

    Raises:
        ValueError: if an option is unknown or has a bad value.
        RuntimeError: if no actor starts within ``start_timeout``, or the actors' constructor
            fails (e.g. a module of the model cannot be imported on a node).

    Attributes:
        failures: shards lost so far (to a dead actor, a dead node or a timeout).
        shipped: the modules pickled by value for the workers (see ``ship_code``).
    """

    def __init__(
        self, *, model, score_fn, score_mode, flat, data, address=None, chunk_size=None,
        objectives=None, precision="float32", **options,
    ) -> None:
        self.options = opts = parse_options("ray", RayOptions, options)
        import ray

        from hybridopt.backends.ray_code import shipped_by_value

        self._ray = ray
        self._started = connect(address, opts.init_options)
        self._live: list[Any] = []  # actors that answered, in the order they came up
        self._starting: dict[Any, Any] = {}  # actor -> its ping, not answered yet
        self._replaced: dict[Any, int] = {}  # actor -> lost actors its slot replaced so far
        self._spec_ref = self._data_ref = None
        self._running = False  # True once start-up is over
        self.failures = 0
        self.shipped: list[str] = []
        try:
            spec = WorkerSpec(
                model=cpu_model(model), score_fn=score_fn, score_mode=score_mode, flat=flat,
                method=opts.method, chunk_size=chunk_size, objectives=objectives,
                precision=precision,
            )
            data = data_to(data, "cpu")
            with shipped_by_value(spec, type(data), enabled=opts.ship_code) as self.shipped:
                try:
                    self._spec_ref = ray.put(spec)
                    self._data_ref = ray.put(data)
                except (TypeError, pickle.PicklingError) as err:
                    by_value = ", ".join(self.shipped) or "none"
                    raise TypeError(
                        f"cannot send the model, score_fn or data to the Ray workers: "
                        f"{_short(err)} (modules pickled by value: {by_value}; with "
                        "ship_code=False every node must import them instead)"
                    ) from err
            if self.shipped:
                log.info("Ray workers get these modules by value: %s", ", ".join(self.shipped))
            self._actor_class = ray.remote(RayWorker).options(
                num_cpus=opts.cpus_per_actor,
                num_gpus=opts.gpus_per_actor,
                max_restarts=0,  # lost actors are replaced here, see the module's docstring
                max_task_retries=0,  # shards are re-run here, on whichever actor is alive
                scheduling_strategy="SPREAD",
            )
            self._start(opts.num_actors or self._default_actors())
            self._running = True
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

    def _spawn(self, replaced: int) -> None:
        """Create an actor; it counts as live once it answers its first ping."""
        actor = self._actor_class.remote(
            self._spec_ref, self._data_ref, self.options.gpus_per_actor > 0, self.options.threads
        )
        self._starting[actor] = actor.ping.remote()
        self._replaced[actor] = replaced

    def _start(self, n: int) -> None:
        """Create ``n`` actors; wait for them as the module's docstring says."""
        for _ in range(n):
            self._spawn(0)
        begin = time.monotonic()
        deadline = begin + self.options.start_timeout
        while self._starting and time.monotonic() < deadline:
            had_live = bool(self._live)
            self._ray.wait(list(self._starting.values()), num_returns=1,
                           timeout=max(0.0, deadline - time.monotonic()))
            self._poll_starting()
            if self._live and not had_live:  # the first is up: the others get as long again
                took = time.monotonic() - begin
                deadline = min(deadline, time.monotonic() + max(STRAGGLER_WAIT, took))
        if not self._live:
            raise RuntimeError(
                f"no Ray actor started within start_timeout={self.options.start_timeout}s "
                f"({n} asked for). {self._resources_text()}"
            )
        if self._starting:
            log.warning(
                "%d of %d Ray actors are up; the other %d are still starting (%s) and join "
                "between generations", len(self._live), n, len(self._starting),
                self._resources_text(),
            )

    def _resources_text(self) -> str:
        def cpu_gpu(resources: dict) -> dict:
            return {k: resources[k] for k in ("CPU", "GPU") if k in resources}

        ray = self._ray
        return (
            f"Each actor needs {self.options.cpus_per_actor} CPU and "
            f"{self.options.gpus_per_actor} GPU (backend_options cpus_per_actor, "
            f"gpus_per_actor); the cluster has {cpu_gpu(ray.cluster_resources())}, "
            f"free now {cpu_gpu(ray.available_resources())}."
        )

    def _poll_starting(self) -> None:
        """Actors whose first ping came back join the pool; those that died are replaced."""
        ray = self._ray
        if not self._starting:
            return
        pings = {ping: actor for actor, ping in self._starting.items()}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=0)
        for ping in ready:
            actor = pings[ping]
            del self._starting[actor]
            try:
                ray.get(ping)
            except ray.exceptions.RayActorError as err:
                if err.actor_init_failed:  # the constructor raised: every actor would
                    raise RuntimeError(
                        f"a Ray actor failed to start: {_short(err, 800)}\nThe modules that "
                        "define the model and score_fn must be importable on every node, or "
                        "be shipped by value (ship_code=True; see hybridopt.backends.ray_code)."
                    ) from err
                self._lose(actor, err)
            except ray.exceptions.RayError as err:
                self._lose(actor, err)
            else:
                self._live.append(actor)
                if self._running:
                    log.info("a Ray actor joined (%d live)", len(self._live))

    def _lose(self, actor: Any, error: BaseException | str) -> None:
        """Take a failed actor out of the pool and start its replacement, if any is left."""
        if actor in self._live:
            self._live.remove(actor)
        self._starting.pop(actor, None)
        replaced = self._replaced.pop(actor, 0)
        self._kill(actor)
        if replaced < self.options.max_retries:
            log.warning("a Ray actor is lost (%s); starting a replacement", _short(error))
            self._spawn(replaced + 1)
        else:
            log.warning("a Ray actor is lost (%s); it was replaced max_retries=%d times "
                        "already", _short(error), self.options.max_retries)

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception as err:  # already gone
            log.debug("could not kill a Ray actor: %s", err)

    def _pick(self, busy: dict[Any, int]) -> Any:
        """A live actor for a shard: the least busy, waiting for one to start if none is."""
        self._poll_starting()
        deadline = time.monotonic() + self.options.start_timeout
        while not self._live and self._starting and time.monotonic() < deadline:
            self._ray.wait(list(self._starting.values()), num_returns=1,
                           timeout=max(0.0, deadline - time.monotonic()))
            self._poll_starting()
        if not self._live:
            waiting = (
                f"; none of the {len(self._starting)} replacements started within "
                f"start_timeout={self.options.start_timeout}s. {self._resources_text()}"
                if self._starting else ""
            )
            raise RuntimeError(
                f"no Ray worker left: all actors died or stopped answering ({self.failures} "
                f"shards lost, max_retries={self.options.max_retries}){waiting}"
            )
        return min(self._live, key=lambda a: busy.get(a, 0))

    def worker_info(self) -> list[dict]:
        """``{"pid", "host", "node_ip", "device", "threads"}`` of each live actor, in shard
        order; actors that came up since the last generation join first."""
        self._poll_starting()
        refs = [a.info.remote() for a in self._live]
        return self._ray.get(refs, timeout=self.options.timeout)

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self, population: Tensor, bounds: Bounds) -> ScoreBatch:
        """Scores ``[P]`` (and objectives ``[P, M]``) of ``population`` on rows ``bounds`` of
        the data, in order.

        Raises:
            RuntimeError: if a shard failed more than ``max_retries`` times, or no actor is
                left.
            Exception: an error raised by ``score_fn`` or the model inside an actor.
        """
        ray = self._ray
        host = population.detach().cpu().numpy()
        self._poll_starting()  # actors that came up since the last generation join now
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
            for actor in [*self._live, *self._starting]:
                self._kill(actor)
        self._live, self._starting, self._replaced = [], {}, {}
        self._spec_ref = self._data_ref = None
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
