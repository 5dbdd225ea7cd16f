"""docker-compose.yml, checked without Docker: every command exists, every setting is real.

No Docker engine runs here; the same topology (PostgreSQL, Redis, API, two workers) runs
natively in tests/integration. This test keeps the compose file honest against the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser
from service.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
DPSYNTH = {name: svc for name, svc in SERVICES.items() if svc.get("command", [""])[0] == "dpsynth"}
ONE_SHOT = {name for name, svc in SERVICES.items() if svc.get("restart") == "no"}


def test_the_topology_is_all_there():
    assert {"postgres", "redis", "minio", "migrate", "api", "worker-cpu", "worker-gpu"} <= set(SERVICES)
    assert SERVICES["api"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    gpu = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


@pytest.mark.parametrize("name", sorted(DPSYNTH))
def test_every_dpsynth_command_parses(name: str):
    service = SERVICES[name]
    commands = [service["command"]]
    check = service.get("healthcheck", {}).get("test", [])
    if check[1:2] == ["dpsynth"]:
        commands.append(check[1:])  # drop "CMD"
    for command in commands:
        assert command[0] == "dpsynth"
        args = build_parser().parse_args(command[1:])  # a bad command exits here
        assert args.command == command[1]


def test_the_image_default_command_parses():
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd is not None
    command = yaml.safe_load(cmd.group(1))
    build_parser().parse_args(command[1:])


@pytest.mark.parametrize("name", sorted(DPSYNTH))
def test_every_setting_the_compose_file_sets_is_a_real_setting(name: str):
    known = {f"DPSYNTH_{field.upper()}" for field in Settings.model_fields}
    env = SERVICES[name]["environment"]
    assert {key for key in env if key.startswith("DPSYNTH_")} - known == set()
    assert env["DPSYNTH_PRODUCTION"] == "true"
    # Production refuses to start without these; compose must set them all.
    assert {
        "DPSYNTH_DATABASE_URL",
        "DPSYNTH_BROKER_URL",
        "DPSYNTH_STORAGE_URL",
        "DPSYNTH_ENCRYPTION_KEY",
    } <= set(env)


def test_long_running_services_have_health_checks():
    for name, service in SERVICES.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in service, f"{name} has no healthcheck"


def test_dockerfile_copies_what_exists():
    for source in re.findall(r"^COPY (\S+)", (ROOT / "Dockerfile").read_text(), re.M):
        assert (ROOT / source).exists(), source
