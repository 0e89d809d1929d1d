"""deploy/: the docker-compose stack parsed (Docker cannot run here), its milterd image and
configuration checked against the repository, and the snippets' key lines present."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import Engine
from milterd.cli import EXTRA_SECTIONS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_the_stack_has_its_four_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert isinstance(services, dict)
    assert set(services) == {"postfix", "milterd", "redis", "unbound"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_milterd_is_built_from_this_repository(compose: dict[str, Any]) -> None:
    milterd = compose["services"]["milterd"]
    build = milterd["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / "pyproject.toml").is_file()
    dockerfile = context / build["dockerfile"]
    text = dockerfile.read_text()
    for copied in ("milterd", "engine", "rules", "maps", "pyproject.toml"):
        assert f"COPY {copied}" in text or f" {copied} " in text, copied
        assert (context / copied).exists(), copied
    assert 'CMD ["milterd", "run"' in text


def test_milterd_gets_redis_dns_and_its_listen_address(compose: dict[str, Any]) -> None:
    services = compose["services"]
    milterd = services["milterd"]
    env = milterd["environment"]
    assert env["MILTERD_REDIS_URL"].startswith("redis://redis:")
    unbound_ip = services["unbound"]["networks"]["mail"]["ipv4_address"]
    assert env["MILTERD_DNS_NAMESERVERS"] == unbound_ip
    assert env["MILTERD_MILTER_LISTEN"] == "0.0.0.0:11332"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in milterd["volumes"]}
    assert mounts["/etc/milterd"] == "./milterd"
    assert (DEPLOY / "milterd").is_dir()
    assert "/var/lib/milterd" in mounts
    named = set(compose["volumes"])
    assert mounts["/var/lib/milterd"] in named
    assert set(milterd["depends_on"]) == {"redis", "unbound"}
    postfix = services["postfix"]
    assert postfix["environment"]["MILTERD_ADDRESS"] == "inet:milterd:11332"
    assert (DEPLOY / postfix["build"]["context"] / "Dockerfile").is_file()


def test_the_stacks_milterd_configuration_is_accepted(tmp_path: Path) -> None:
    environ = {
        "MILTERD_REDIS_URL": "redis://redis:6379/0",
        "MILTERD_DNS_NAMESERVERS": "172.28.0.53",
        "MILTERD_MILTER_LISTEN": "0.0.0.0:11332",
        "MILTERD_DATA_DIR": str(tmp_path),
    }
    config = Engine.load_config(DEPLOY / "milterd", EXTRA_SECTIONS, environ=environ)
    assert config.section("store")["backend"] == "redis"
    assert config.section("redis")["url"] == "redis://redis:6379/0"
    assert config.section("milter")["listen"] in ("0.0.0.0:11332", ["0.0.0.0:11332"])
    assert config.section("logging")["format"] == "json"


def test_systemd_unit_is_hardened_and_reloads_with_sighup() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "milterd.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].endswith("milterd run --config-dir /etc/milterd")
    assert "kill -HUP $MAINPID" in (DEPLOY / "milterd.service").read_text()
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert key in service, key
    assert service["KillSignal"] == "SIGTERM"


def test_mta_snippets_point_at_milterd() -> None:
    assert "smtpd_milters = inet:127.0.0.1:11332" in (DEPLOY / "postfix-main.cf").read_text()
    assert "S=inet:11332@127.0.0.1" in (DEPLOY / "sendmail-milterd.mc").read_text()
    unbound = (DEPLOY / "unbound" / "unbound.conf").read_text()
    assert "forward-zone:" not in unbound.replace("no forward-zone", "")
