"""The compose file and Dockerfile describe a deployment that can actually run."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import ServiceSettings
from ialp.cli import build_parser
from trainer.online import TrainerSettings

ROOT = Path(__file__).resolve().parents[1]
IALP_SERVICES = ("pretrain", "api", "trainer", "simulator")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _ialp_argv(service: dict[str, Any]) -> list[str]:
    """The ``ialp`` arguments a service runs (directly or through ``sh -c``)."""
    command = service["command"]
    if service.get("entrypoint") == ["sh", "-c"]:
        script = command[0]
        tail = script.split("||", 1)[1] if "||" in script else script
        argv = shlex.split(tail)
        assert argv[0] == "ialp", script
        return argv[1:]
    return list(command)


def test_services_and_roles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"redis", "api", "trainer", "simulator", "pretrain"}
    assert services["api"]["deploy"]["replicas"] == 2
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    for name in IALP_SERVICES:
        svc = services[name]
        assert svc.get("build") == "." and svc.get("image"), name
        assert any(v.endswith(":/data:ro") for v in svc["volumes"]), f"{name}: data volume"


def test_every_command_exists_with_its_flags(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in IALP_SERVICES:
        argv = _ialp_argv(compose["services"][name])
        args = parser.parse_args(argv)  # SystemExit on an unknown command or flag
        assert callable(args.func), name


def test_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("redis", "api", "trainer"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert (services["api"]["depends_on"]["pretrain"]["condition"]
            == "service_completed_successfully")
    assert services["simulator"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert "8000" in str(services["api"]["ports"])
    sim = _ialp_argv(services["simulator"])
    assert sim[sim.index("--base-url") + 1] == "http://api:8000"


def test_environment_matches_the_settings(compose: dict[str, Any]) -> None:
    known = {f"IALP_{f.upper()}" for f in ServiceSettings.model_fields}
    known |= {f"IALP_{f.upper()}" for f in TrainerSettings.model_fields}
    known |= {"IALP_DATA_DIR", "IALP_CACHE_DIR"}
    for name in IALP_SERVICES:
        env = compose["services"][name].get("environment", {})
        unknown = sorted(k for k in env if k not in known)
        assert not unknown, f"{name}: variables no setting reads: {unknown}"
        assert env["IALP_REDIS_URL"] == "redis://redis:6379/0"


def test_dockerfile_pins_cpu_torch_and_runs_ialp() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert '"torch==2.13.0"' in text
    assert 'ENTRYPOINT ["ialp"]' in text
    for package in ("app", "policy", "trainer", "simulator_client", "ialp"):
        assert f"COPY {package} ./{package}" in text


def test_compose_config_when_available() -> None:
    for candidate in (["docker-compose"], ["docker", "compose"]):
        if shutil.which(candidate[0]) is None:
            continue
        probe = subprocess.run([*candidate, "version"], capture_output=True, check=False)
        if probe.returncode != 0:
            continue
        import os

        cmd = [*candidate, "-f", str(ROOT / "docker-compose.yml"), "config"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IALP_")}
        # Keys come from the environment: without one compose refuses, naming it ...
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        assert res.returncode != 0 and "IALP_API_KEY" in res.stderr, res.stderr
        # ... and with one every service that talks to the API carries it.
        res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                             env={**env, "IALP_API_KEY": "k-from-env-7f3a"})
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("IALP_API_KEY: k-from-env-7f3a") >= 3, res.stdout
        return
    pytest.skip("no docker-compose binary on this machine; the YAML checks above still ran")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` substitution."""
    import re

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name, "")
        if op == ":?" and not got:
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not got:
            return arg
        return got

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value)


def test_keys_come_from_the_environment_and_are_required(compose: dict[str, Any]) -> None:
    for name in IALP_SERVICES:
        env = compose["services"][name]["environment"]
        # Never a literal key in the file: the API key must be given, the admin key may.
        assert env["IALP_API_KEY"].startswith("${IALP_API_KEY:?"), name
        assert env["IALP_ADMIN_API_KEY"] == "${IALP_ADMIN_API_KEY:-}", name
        with pytest.raises(KeyError, match="IALP_API_KEY"):
            _interpolate(env["IALP_API_KEY"], {})
        resolved = {k: _interpolate(str(v), {"IALP_API_KEY": "k1"}) for k, v in env.items()}
        assert resolved["IALP_API_KEY"] == "k1" and resolved["IALP_ADMIN_API_KEY"] == ""
    # What the API replicas build from that environment: the key, and no admin key.
    api_env = {k: _interpolate(str(v), {"IALP_API_KEY": "k1"})
               for k, v in compose["services"]["api"]["environment"].items()}
    settings = ServiceSettings(**{k[5:].lower(): v for k, v in api_env.items()
                                  if k[5:].lower() in ServiceSettings.model_fields})
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k1"
    assert settings.admin_api_key is None and not settings.allow_anonymous
    api_argv = _ialp_argv(compose["services"]["api"])
    assert "--insecure" not in api_argv


def test_redis_memory_is_bounded_without_evicting_the_stream(
        compose: dict[str, Any]) -> None:
    cmd = compose["services"]["redis"]["command"]
    assert _interpolate(cmd[cmd.index("--maxmemory") + 1], {}) == "2gb"
    # volatile-* / allkeys-* could evict de-duplication markers (TTL) or the stream.
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
