"""backend="ray" on a real two-node Ray cluster (`ray start`): user code, faults, `ray job submit`.

The head listens on 127.0.0.2 and a second node joins from 127.0.0.3 (both on this machine;
tests only ever use loopback addresses, and ports they picked free themselves). Runs against
the cluster must give exactly the result of an undisturbed in-process run while an actor's
process, or the whole second node, is SIGKILLed during start-up or in the middle of a
generation. The nodes cannot import the tests' modules: everything the workers run travels by
value. The fixture records the processes each `ray start` left behind (their own process
group) and stops only those, with their descendants and whatever names its private temp dir,
then checks none is left; another Ray on this machine is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
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

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
REPO = Path(__file__).resolve().parent.parent
HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
SLOW_ENV = "HYBRIDOPT_TEST_SLOW_SCORE"  # set on the cluster's nodes only
# C++ lines "[date time E pid tid] file.cc:..." and Python lines "date time ERROR file.py:..."
ERROR_LINE = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,.]+ [EF] \d+ \d+\]|"
                        r"\d{4}-\d\d-\d\d [\d:,.]+\s+(ERROR|CRITICAL)\s")


def hits(actions, data):
    """Plain-Python hit rate; slow on the cluster's workers so a kill lands mid-shard."""
    if os.environ.get(SLOW_ENV):
        time.sleep(0.03)
    return float(np.mean(np.asarray(actions) == np.asarray(data[1])))


# -- processes --------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (parent pid, process group, start time, command line) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (int(stat[1]), int(stat[2]), int(stat[19]), cmd)
    return table


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


class Node:
    """The processes one `ray start` left running: its process group, recorded at start."""

    def __init__(self, args: list[str], env: dict, temp_dir: Path) -> None:
        self.args, self.env, self.temp_dir = args, env, temp_dir
        self.daemons: dict[int, int] = {}  # pid -> start time (guards against pid reuse)

    def start(self) -> Node:
        started = subprocess.Popen(
            [RAY, "start", "--disable-usage-stats", f"--temp-dir={self.temp_dir}", *self.args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,  # what it leaves running stays in its process group
        )
        try:
            out, _ = started.communicate(timeout=120)
        finally:
            table = _processes()
            self.daemons = {p: row[2] for p, row in table.items() if row[1] == started.pid}
        if started.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{out.decode()[-3000:]}")
        return self

    def pids(self) -> set[int]:
        """The node's daemons still alive, every descendant, and what names its temp dir."""
        table = _processes()
        found = {p for p, start in self.daemons.items() if p in table and table[p][2] == start}
        found |= {p for p, row in table.items() if str(self.temp_dir) in row[3]}
        found.discard(os.getpid())
        while True:
            children = {p for p, row in table.items() if row[0] in found} - found
            if not children:
                return found
            found |= children

    def kill(self) -> set[int]:
        pids = self.pids()
        _kill_all(pids)
        return pids


class Cluster:
    """A head on 127.0.0.2 (2 CPUs, with the job server) and a second node on 127.0.0.3."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hxray-"))
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.dashboard = f"http://{HEAD_IP}:{_free_port(HEAD_IP)}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",  # Ray 2.60 turns token auth on by default
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),  # for jobs
            SLOW_ENV: "1",
            # A dead node is noticed after ~5 s instead of ~15 s
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "2000",
        }
        self.env.pop("PYTHONPATH", None)  # the nodes import nothing of the tests
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[Node] = []
        self.node: Node | None = None

    def start(self) -> Cluster:
        head = Node([
            "--head", f"--node-ip-address={HEAD_IP}", f"--port={self.port}", "--num-cpus=2",
            "--include-dashboard=true", f"--dashboard-host={HEAD_IP}",
            f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}",
            f"--ray-client-server-port={_free_port(HEAD_IP)}",
            f"--dashboard-agent-listen-port={_free_port(HEAD_IP)}",
        ], self.env, self.root / "head")
        self.nodes.append(head)
        head.start()
        self.start_node()
        return self

    def start_node(self) -> None:
        """Start a (new) second node on 127.0.0.3 with 1 CPU; it is up when this returns."""
        self.node = Node([
            f"--address={self.address}", f"--node-ip-address={NODE_IP}", "--num-cpus=1",
            f"--dashboard-agent-listen-port={_free_port(NODE_IP)}",
        ], self.env, self.root / f"node{len(self.nodes)}")
        self.nodes.append(self.node)
        self.node.start()

    def ensure_node(self) -> Node:
        """The second node, started again if a test killed it."""
        if self.node is None or not any(_alive(p) for p in self.node.daemons):
            self.start_node()
        assert self.node is not None
        return self.node

    def pids(self) -> set[int]:
        return set().union(*(n.pids() for n in self.nodes))

    def stop(self) -> list[int]:
        """Kill every process of the cluster; the pids of any that would not die."""
        for node in reversed(self.nodes):
            node.kill()
        left = [p for p in self.pids() if _alive(p)]
        shutil.rmtree(self.root, ignore_errors=True)
        return left


@pytest.fixture(scope="module")
def cluster():
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # for this driver
    os.environ.pop("RAY_ADDRESS", None)
    made = Cluster()
    try:
        yield made.start()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        left = made.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert not left, f"cluster processes left running: {left}"


# -- runs -------------------------------------------------------------------------------------

N_EVALS = 24 * 7


def _fit(backend: str, address=None, callback=None, model=None, score_fn=hits, **options):
    x, best = make_bandit()
    if backend == "ray":
        options = {"num_actors": 2, "max_retries": 3, "timeout": 60, "start_timeout": 60,
                   "init_options": {"_node_ip_address": HEAD_IP}, **options}
    opt = HybridOptimizer(
        mlp() if model is None else model, score_fn, (x, best), backend=backend,
        address=address, backend_options=options, phases=("genetic",), population_size=24,
        seed=5, genetic=GeneticConfig(elite=2),
    )
    with opt:
        result = opt.fit(max_evaluations=N_EVALS, progress=False,
                         callbacks=() if callback is None else (callback,))
        failures = getattr(opt.evaluation.distributed, "failures", 0)
    return result, failures


@pytest.fixture(scope="module")
def undisturbed():
    return _fit("vmap")[0]


def _same(result, expected) -> None:
    assert result.best_score == expected.best_score
    assert [r["score"] for r in result.history] == [r["score"] for r in expected.history]
    for key, value in expected.best_state_dict.items():
        assert torch.equal(result.best_state_dict[key], value), key


def _node_ips(opt) -> set[str]:
    return {w["node_ip"] for w in opt.evaluation.distributed.worker_info()}


# -- the user's own code ----------------------------------------------------------------------

USER_MODULES = {
    # A layer class in one module, the model in another, the score function in a third one
    # that calls a helper of the first: every one of them must reach the workers.
    "hxuser_layers": """
        import torch
        from torch import nn

        GAIN = 1.5

        def clip_hits(hits):
            return hits.clamp(0.0, 1.0)

        class Gained(nn.Module):
            def __init__(self, n):
                super().__init__()
                self.linear = nn.Linear(n, n)

            def forward(self, x):
                return torch.tanh(GAIN * self.linear(x))
    """,
    "hxuser_model": """
        from torch import nn
        from hxuser_layers import Gained

        class UserNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = Gained(6)
                self.head = nn.Linear(6, 3)

            def forward(self, x):
                return self.head(self.body(x))
    """,
    "hxuser_score": """
        import hybridopt as ho
        import hxuser_layers

        @ho.batched
        def user_hits(actions, data):
            return hxuser_layers.clip_hits((actions == data[1]).float().mean(-1))
    """,
}


@pytest.fixture
def user_code(tmp_path):
    """Modules in a temp dir on this driver's sys.path only (not on the nodes' PYTHONPATH)."""
    folder = tmp_path / "usercode"
    folder.mkdir()
    for name, source in USER_MODULES.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(folder))
    try:
        import hxuser_model
        import hxuser_score

        def make():
            torch.manual_seed(0)
            return hxuser_model.UserNet()

        yield make, hxuser_score.user_hits
    finally:
        sys.path.remove(str(folder))
        for name in USER_MODULES:
            sys.modules.pop(name, None)


def test_users_own_modules_travel_to_both_nodes(cluster, user_code):
    make_model, score = user_code
    cluster.ensure_node()
    expected, _ = _fit("vmap", model=make_model(), score_fn=score)
    # Not shipped, the nodes cannot import the user's modules: a clear error, no hang
    with pytest.raises(RuntimeError, match="importable on every node"):
        _fit("ray", cluster.address, model=make_model(), score_fn=score, ship_code=False)

    ips: set[str] = set()
    shipped: list[str] = []

    class Where:
        def on_generation(self, opt, row) -> None:
            ips.update(_node_ips(opt))
            shipped[:] = opt.evaluation.distributed.shipped

    # Three one-CPU actors on a head with 2 CPUs and a node with 1: both nodes must hold one
    # (SPREAD alone is best-effort and may put two actors on the head)
    result, failures = _fit("ray", cluster.address, Where(), model=make_model(), score_fn=score,
                            num_actors=3)
    _same(result, expected)
    assert failures == 0
    assert ips == {HEAD_IP, NODE_IP}
    assert set(shipped) == set(USER_MODULES)
    assert not ray.cloudpickle.list_registry_pickle_by_value()  # registrations undone


# -- a healthy run logs no error --------------------------------------------------------------

HEALTHY_RUN = """
import numpy as np
import torch
from hybridopt import GeneticConfig, HybridOptimizer

def hits(actions, data):
    return float(np.mean(np.asarray(actions) == np.asarray(data[1])))

g = torch.Generator().manual_seed(1)
x = torch.randn(256, 6, generator=g)
best = (x @ torch.randn(6, 3, generator=g)).argmax(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
options = {"num_actors": 2, "init_options": {"_node_ip_address": "127.0.0.2"}}
with HybridOptimizer(model, hits, (x, best), backend="ray", address=ADDRESS,
                     backend_options=options, phases=("genetic",), population_size=8,
                     seed=0) as opt:
    result = opt.fit(max_evaluations=24, progress=False)
    ips = sorted({w["node_ip"] for w in opt.evaluation.distributed.worker_info()})
print("HEALTHY", result.best_score, ips)
"""


def test_healthy_run_logs_no_error_line(cluster, tmp_path):
    cluster.ensure_node()
    script = tmp_path / "healthy.py"
    script.write_text(HEALTHY_RUN.replace("ADDRESS", repr(cluster.address)))
    env = {k: v for k, v in cluster.env.items() if k != SLOW_ENV}
    run = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "HEALTHY" in run.stdout, output[-3000:]
    assert f"'{NODE_IP}'" in run.stdout, output[-3000:]  # the run did reach both nodes
    errors = [line for line in output.splitlines() if ERROR_LINE.search(line)]
    assert not errors, "\n".join(errors)


# -- faults -----------------------------------------------------------------------------------


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
    cluster.ensure_node()

    def actor_pid(opt):
        return {opt.evaluation.distributed.worker_info()[0]["pid"]}

    killer = KillMidGeneration(actor_pid)
    result, failures = _fit("ray", cluster.address, killer)
    assert killer.killed and failures >= 1
    _same(result, undisturbed)


def test_dead_node_mid_generation_gives_identical_result(cluster, undisturbed):
    node = cluster.ensure_node()

    def second_node(opt):
        assert NODE_IP in _node_ips(opt)
        return node.pids()  # the node's raylet with every process it started

    killer = KillMidGeneration(second_node)
    result, failures = _fit("ray", cluster.address, killer)
    assert killer.killed and failures >= 1
    _same(result, undisturbed)


class KillDuringStartUp(threading.Thread):
    """SIGKILL the second node as soon as an actor is being built there."""

    def __init__(self, node: Node, holder: dict) -> None:
        super().__init__(daemon=True)
        self.node, self.holder = node, holder
        self.killed_during_start_up: bool | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            table = _processes()
            if any(table[p][3].startswith("ray::RayWorker") for p in self.node.pids()
                   if p in table):
                opt = self.holder.get("opt")
                self.killed_during_start_up = opt is not None and opt.evaluation.distributed is None
                self.node.kill()
                return
            time.sleep(0.02)


def test_dead_node_during_start_up_gives_identical_result(cluster, undisturbed):
    node = cluster.ensure_node()
    holder: dict = {}
    killer = KillDuringStartUp(node, holder)
    live: list[int] = []

    class Watch:
        def on_generation(self, opt, row) -> None:
            backend = opt.evaluation.distributed
            live.append(len(backend.worker_info()))
            if row["step"] == 2:  # give the replacement time to come up on the head
                deadline = time.monotonic() + 60
                while len(backend.worker_info()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.2)

    x, best = make_bandit()
    opt = HybridOptimizer(
        mlp(), hits, (x, best), backend="ray", address=cluster.address,
        backend_options={"num_actors": 2, "start_timeout": 60, "timeout": 60,
                         "init_options": {"_node_ip_address": HEAD_IP}},
        phases=("genetic",), population_size=24, seed=5, genetic=GeneticConfig(elite=2),
    )
    holder["opt"] = opt
    killer.start()
    try:
        with opt:
            result = opt.fit(max_evaluations=N_EVALS, progress=False, callbacks=(Watch(),))
    finally:
        killer.stop.set()
        killer.join(10)
    assert killer.killed_during_start_up, "the node was not killed while the actors started"
    _same(result, undisturbed)
    # The lost actor was replaced (during start-up or between generations)
    assert live[-1] == 2, live


def test_actor_waiting_for_resources_joins_when_a_node_appears(cluster):
    # Three actors on the head's 2 CPUs: one waits until a node brings a third CPU
    from hybridopt.backends import make_backend
    from hybridopt.population.evaluate import PopulationEvaluator
    from hybridopt.population.flat import FlatParams
    from hybridopt.scoring import Scorer

    if cluster.node is not None:
        cluster.node.kill()  # this test starts without a second node
    model, data = mlp().eval(), make_bandit()
    flat = FlatParams.from_module(model)
    scorer = Scorer(hits)
    scorer.mode = "per_sequence"
    population = flat.vector(model) + 0.3 * torch.randn(
        30, flat.dim, generator=torch.Generator().manual_seed(0))
    expected = PopulationEvaluator(model, scorer, flat, method="vmap").evaluate(population, data)
    ray.init(address=cluster.address, _node_ip_address=HEAD_IP)
    try:
        deadline = time.monotonic() + 60
        while ray.cluster_resources().get("CPU") != 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # until the cluster has noticed that the node is gone
        with make_backend("ray", model=model, score_fn=hits, score_mode="per_sequence",
                          flat=flat, data=data, num_actors=3, start_timeout=60) as backend:
            assert len(backend.worker_info()) == 2
            assert torch.equal(backend.evaluate(population, None).scores, expected.scores)
            cluster.start_node()
            deadline = time.monotonic() + 60
            while len(backend.worker_info()) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert NODE_IP in {w["node_ip"] for w in backend.worker_info()}
            assert torch.equal(backend.evaluate(population, None).scores, expected.scores)
            assert backend.failures == 0
    finally:
        ray.shutdown()


# -- ray job submit ---------------------------------------------------------------------------


def test_ray_job_submit_runs_the_example(cluster, tmp_path):
    # The job's driver runs on the head: `hybridopt` comes from the head's PATH, the Ray
    # address from the job, and the genetic phase scores its populations on Ray actors.
    work = tmp_path / "job"
    shutil.copytree(REPO / "examples", work / "examples")
    out = tmp_path / "run"
    env = {k: v for k, v in cluster.env.items() if k != SLOW_ENV}
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", str(work),
         "--", "hybridopt", "run", "examples/trading.toml", "--no-progress",
         "--set", "optimizer.backend=ray", "--set", 'optimizer.phases=["genetic"]',
         "--set", "optimizer.population_size=16", "--set", "fit.max_evaluations=64",
         "--set", "fit.max_time=30", "--out", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-4000:]
    assert "succeeded" in output, output[-4000:]
    assert "Connected to Ray cluster" in output, output[-4000:]  # the backend joined it
    assert (out / "summary.json").is_file(), output[-4000:]
    header, *rows = (out / "history.csv").read_text().splitlines()
    assert header.startswith("phase,") and len(rows) >= 2
    assert all(row.startswith("genetic,") for row in rows)
