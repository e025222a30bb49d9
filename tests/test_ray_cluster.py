"""backend="ray" on a real two-node Ray cluster (`ray start`), with faults injected mid-run.

The head listens on 127.0.0.2 and a second node joins from 127.0.0.3 (both on this machine;
tests only ever use loopback addresses). A fit runs against the cluster while an actor's
process, then a whole node, is SIGKILLed in the middle of a generation; each run must finish
with exactly the result of an undisturbed run. The fixture stops only the processes of the
cluster it started (identified by its private temp dir and port), then checks none is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_bandit, mlp

from hybridopt import GeneticConfig, HybridOptimizer

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
TESTS = str(Path(__file__).parent)
HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
SLOW_ENV = "HYBRIDOPT_TEST_SLOW_SCORE"  # set on the cluster's nodes only


def hits(actions, data):
    """Plain-Python hit rate; slow on the cluster's workers so a kill lands mid-shard."""
    if os.environ.get(SLOW_ENV):
        time.sleep(0.03)
    return float(np.mean(np.asarray(actions) == np.asarray(data[1])))


# -- the cluster ------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this machine."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, cmd)
    return table


def _tree(*markers: str) -> set[int]:
    """Processes whose command line contains a marker, with all their descendants."""
    table = _processes()
    found = {p for p, (_, cmd) in table.items() if any(m in cmd for m in markers)}
    found.discard(os.getpid())
    while True:
        children = {p for p, (ppid, _) in table.items() if ppid in found} - found
        if not children:
            return found
        found |= children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped


def _kill_all(pids: set[int], wait: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _ray_start(*args: str, env: dict) -> None:
    subprocess.run([RAY, "start", "--disable-usage-stats", *args], env=env, check=True,
                   capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cluster():
    """A head on 127.0.0.2 (2 CPUs) and a second node on 127.0.0.3 (1 CPU)."""
    temp_dir = tempfile.mkdtemp(prefix="hxray-")
    port = _free_port(HEAD_IP)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # Ray 2.60 turns token auth on by default
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")])),
        SLOW_ENV: "1",
    }
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # for this driver
    markers = (temp_dir, f"{HEAD_IP}:{port}")
    try:
        _ray_start(
            "--head", f"--node-ip-address={HEAD_IP}", f"--port={port}", "--num-cpus=2",
            "--include-dashboard=false", f"--temp-dir={temp_dir}",
            f"--ray-client-server-port={_free_port(HEAD_IP)}",
            f"--dashboard-agent-listen-port={_free_port(HEAD_IP)}", env=env,
        )
        _ray_start(f"--address={HEAD_IP}:{port}", f"--node-ip-address={NODE_IP}",
                   "--num-cpus=1", f"--dashboard-agent-listen-port={_free_port(NODE_IP)}",
                   env=env)
        yield f"{HEAD_IP}:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _kill_all(_tree(*markers))
        left = [p for p in _tree(*markers) if _alive(p)]
        shutil.rmtree(temp_dir, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        assert not left, f"cluster processes left running: {left}"


# -- runs -------------------------------------------------------------------------------------

N_EVALS = 24 * 7


def _fit(backend: str, address=None, callback=None):
    x, best = make_bandit()
    options = {}
    if backend == "ray":
        options = {"num_actors": 2, "max_retries": 3, "timeout": 60,
                   "init_options": {"_node_ip_address": HEAD_IP}}
    opt = HybridOptimizer(
        mlp(), hits, (x, best), backend=backend, address=address, backend_options=options,
        phases=("genetic",), population_size=24, seed=5, genetic=GeneticConfig(elite=2),
    )
    with opt:
        result = opt.fit(max_evaluations=N_EVALS, progress=False,
                         callbacks=() if callback is None else (callback,))
        failures = getattr(opt._distributed, "failures", 0)
    return result, failures


@pytest.fixture(scope="module")
def undisturbed():
    return _fit("vmap")[0]


def _same(result, expected) -> None:
    assert result.best_score == expected.best_score
    assert [r["score"] for r in result.history] == [r["score"] for r in expected.history]
    for key, value in expected.best_state_dict.items():
        assert torch.equal(result.best_state_dict[key], value), key


class KillMidGeneration:
    """After generation 2, SIGKILL a process of the cluster while generation 3 runs."""

    def __init__(self, pick):
        self.pick = pick  # (opt) -> pids to kill
        self.killed: list[int] = []

    def on_generation(self, opt, row) -> None:
        if row["step"] != 2:
            return
        pids = self.pick(opt)

        def kill() -> None:
            time.sleep(0.1)  # a shard takes ~0.4 s: the kill lands while it runs
            _kill_all(pids)
            self.killed.extend(pids)

        threading.Thread(target=kill, daemon=True).start()


def test_killed_actor_process_gives_identical_result(cluster, undisturbed):
    def actor_pid(opt):
        return {opt._distributed.worker_info()[0]["pid"]}

    killer = KillMidGeneration(actor_pid)
    result, failures = _fit("ray", cluster, killer)
    assert killer.killed and failures >= 1
    _same(result, undisturbed)


def test_dead_node_gives_identical_result(cluster, undisturbed):
    def second_node(opt):
        assert NODE_IP in {w["node_ip"] for w in opt._distributed.worker_info()}
        # The node's raylet with every process it started
        return _tree(f"--node_ip_address={NODE_IP}")

    killer = KillMidGeneration(second_node)
    result, failures = _fit("ray", cluster, killer)
    assert killer.killed and failures >= 1
    _same(result, undisturbed)
