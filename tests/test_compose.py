"""The compose files and the Dockerfile: pinned images, no clash with native servers, nothing
ingested by `up`, a vLLM stack that starts on a fresh machine and stays offline once cached.

Docker itself is not needed: the files are parsed, compose's variable defaults are applied as
compose applies them, and the shell commands the containers run are run here with stand-ins
for `vllm` and `ollama` that print what they were given.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FILES = ["docker-compose.ollama.yml", "docker-compose.vllm.yml"]
# Host ports of the servers as installed natively: the stack must not take them by default.
NATIVE_PORTS = {11434: "Ollama", 5432: "PostgreSQL", 8000: "vLLM"}
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-+?])(?P<arg>[^}]*))?\}")


def compose(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's interpolation of ${VAR}, ${VAR:-default}, ${VAR-default} and $$."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        assert op is None, f"{match[0]}: only defaults are used in these files"
        return env.get(name, "")

    parts = value.split("$$")
    return "$".join(VARIABLE.sub(one, part) for part in parts)


def services(name: str) -> dict[str, dict]:
    return compose(name)["services"]


def started_by_up(name: str) -> set[str]:
    """Services `docker compose up` starts with the given file and no profile flag."""
    return {s for s, spec in services(name).items() if not spec.get("profiles")}


def host_ports(spec: dict) -> list[str]:
    return [str(p) for p in spec.get("ports", [])]


def fake(tmp_path: Path, program: str, script: str) -> dict[str, str]:
    """An executable `program` in tmp_path/bin; the environment that finds it first."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    path = folder / program
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def run_command(spec: dict, env: dict[str, str], compose_env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
    """Run a service's `/bin/sh -c` command as its container would, with its environment."""
    assert spec["entrypoint"] == ["/bin/sh", "-c"]
    [script] = spec["command"]
    container_env = {k: interpolate(str(v), compose_env)
                     for k, v in (spec.get("environment") or {}).items()}
    return subprocess.run(["/bin/sh", "-c", interpolate(script, compose_env)],
                          env={**container_env, **env}, capture_output=True, text=True,
                          timeout=30)


# -- both files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FILES)
def test_images_are_pinned(name: str) -> None:
    for service, spec in services(name).items():
        if "build" in spec:  # built here: tagged with kg's version, never pulled
            version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
            assert spec["image"] == f"kg:{version}" and spec["pull_policy"] == "build"
            continue
        image = interpolate(spec["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{service}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{service}: {image}"


@pytest.mark.parametrize("name", FILES)
def test_published_ports_are_local_configurable_and_off_the_native_ones(name: str) -> None:
    published = 0
    for service, spec in services(name).items():
        for port in host_ports(spec):
            published += 1
            match = re.fullmatch(r"(?P<address>[^:]+):\$\{(?P<var>KG_\w+_PORT):-(?P<default>\d+)\}"
                                 r":(?P<container>\d+)", port)
            assert match, f"{service}: {port} is not ADDRESS:${{KG_*_PORT:-N}}:PORT"
            assert match["address"] == "127.0.0.1", f"{service}: {port}"
            default = int(match["default"])
            assert default not in NATIVE_PORTS, \
                f"{service}: {default} clashes with a native {NATIVE_PORTS.get(default)}"
            assert int(match["container"]) in NATIVE_PORTS  # inside the network: the usual
            assert interpolate(port, {match["var"]: "15999"}) == \
                f"127.0.0.1:15999:{match['container']}"
    assert published >= 2


@pytest.mark.parametrize("name", FILES)
def test_up_does_not_ingest(name: str) -> None:
    kg = services(name)["kg"]
    assert kg["profiles"] == ["ingest"]
    assert "kg" not in started_by_up(name)
    assert kg["restart"] == "no"
    assert any(v.endswith(":/data:ro") for v in kg["volumes"])


@pytest.mark.parametrize("name", FILES)
def test_kg_service_talks_to_the_stack_inside_the_network(name: str, tmp_path: Path) -> None:
    provider, url = ("ollama", "http://ollama:11434") if "ollama" in name else \
        ("vllm", "http://vllm:8000/v1")
    spec = services(name)["kg"]
    assert interpolate(spec["environment"]["KG_DATABASE_URL"]) == \
        "postgresql+psycopg://kg:kg@postgres:5432/kg"
    assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = fake(tmp_path, "kg", 'echo "kg $*" >> "$LOG"\n')
    log = tmp_path / "calls.log"
    result = run_command(spec, {**env, "LOG": str(log)})
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[1] for c in calls] == ["db", "admin", "admin", "ingest"]
    model = interpolate(spec["environment"]["KG_MODEL"])
    assert f"--provider {provider} --model {model} --base-url {url}" in calls[1]
    assert "--activate" in calls[1] and calls[2] == "kg admin extraction test"
    assert calls[3] == "kg ingest /data --recursive"


@pytest.mark.parametrize("name", FILES)
def test_kg_service_can_queue_instead_of_extracting(name: str, tmp_path: Path) -> None:
    spec = services(name)["kg"]
    env = fake(tmp_path, "kg", 'echo "kg $*" >> "$LOG"\n')
    log = tmp_path / "calls.log"
    result = run_command(spec, {**env, "LOG": str(log)}, {"KG_INGEST_OPTIONS": "--queue"})
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines()[-1] == "kg ingest /data --recursive --queue"


@pytest.mark.parametrize("name", FILES)
def test_worker_service_scales_and_stops_gracefully(name: str) -> None:
    spec = services(name)["worker"]
    assert spec["profiles"] == ["workers"] and "worker" not in started_by_up(name)
    assert interpolate(str(spec["deploy"]["replicas"])) == "2"
    assert interpolate(str(spec["deploy"]["replicas"]), {"KG_WORKERS": "6"}) == "6"
    assert [interpolate(c, {"KG_WORKER_CONCURRENCY": "4"}) for c in spec["command"]] == \
        ["worker", "--concurrency", "4"]
    assert interpolate(spec["environment"]["KG_DATABASE_URL"]) == \
        "postgresql+psycopg://kg:kg@postgres:5432/kg"
    assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"
    server = "ollama-pull" if "ollama" in name else "vllm"
    assert server in spec["depends_on"]
    # SIGTERM, then time for the chunks in hand before compose kills it.
    assert spec["stop_grace_period"] == "5m" and spec["restart"] == "unless-stopped"
    assert "ports" not in spec


@pytest.mark.parametrize("name", FILES)
def test_postgres_is_healthchecked_and_keeps_its_data(name: str) -> None:
    postgres = services(name)["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


# -- Ollama -------------------------------------------------------------------------------------

def test_ollama_flavours_share_one_pinned_release() -> None:
    spec = services("docker-compose.ollama.yml")
    flavours = {"ollama-cpu": "cpu", "ollama-nvidia": "nvidia", "ollama-amd": "amd",
                "ollama-intel": "intel"}
    tags = set()
    for service, profile in flavours.items():
        assert spec[service]["profiles"] == [profile]
        assert spec[service]["networks"]["default"]["aliases"] == ["ollama"]
        assert "ollama" in " ".join(spec[service]["healthcheck"]["test"])
        for key in ("OLLAMA_NUM_PARALLEL", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_KEEP_ALIVE"):
            assert key in spec[service]["environment"]
        tags.add(interpolate(spec[service]["image"]).removesuffix("-rocm"))
    assert len(tags) == 1 and interpolate(spec["ollama-amd"]["image"]).endswith("-rocm")
    assert interpolate(spec["ollama-amd"]["image"], {"OLLAMA_VERSION": "9.9.9"}) == \
        "ollama/ollama:9.9.9-rocm"
    gpu = spec["ollama-nvidia"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert set(spec["ollama-pull"]["profiles"]) == set(flavours.values())
    assert spec["kg"]["depends_on"]["ollama-pull"]["condition"] == \
        "service_completed_successfully"


@pytest.mark.parametrize(("present", "pulled"), [(False, True), (True, False)])
def test_ollama_pull_downloads_only_a_missing_model(
        tmp_path: Path, present: bool, pulled: bool) -> None:
    # Offline once the model is there: `ollama pull` would fail without a network.
    spec = services("docker-compose.ollama.yml")["ollama-pull"]
    log = tmp_path / "calls.log"
    env = fake(tmp_path, "ollama", f'echo "$*" >> "{log}"\n'
                                   f'[ "$1" = show ] && exit {0 if present else 1}\nexit 0\n')
    result = run_command(spec, env, {"KG_MODEL": "llama3.2:1b"})
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[:2] == ["list", "show llama3.2:1b"]
    assert ("pull llama3.2:1b" in calls) is pulled


# -- vLLM ---------------------------------------------------------------------------------------

def vllm_arguments(tmp_path: Path, compose_env: dict[str, str]) -> list[str]:
    spec = services("docker-compose.vllm.yml")["vllm"]
    env = fake(tmp_path, "vllm", 'for a in "$@"; do echo "$a"; done\n')
    result = run_command(spec, env, compose_env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_vllm_reasoning_parser_only_when_asked(tmp_path: Path) -> None:
    plain = vllm_arguments(tmp_path, {})
    assert plain[:2] == ["serve", "Qwen/Qwen3-8B"]
    assert "--reasoning-parser" not in plain and "" not in plain
    assert plain[plain.index("--served-model-name") + 1] == "Qwen/Qwen3-8B"
    assert plain[plain.index("--max-model-len") + 1] == "8192"
    thinking = vllm_arguments(tmp_path, {"VLLM_REASONING_PARSER": "qwen3",
                                         "KG_MODEL": "Qwen/Qwen3-32B"})
    assert thinking[thinking.index("--reasoning-parser") + 1] == "qwen3"
    assert thinking[1] == "Qwen/Qwen3-32B"


def test_vllm_starts_on_a_fresh_machine_and_is_offline_once_cached() -> None:
    spec = services("docker-compose.vllm.yml")
    download, vllm = spec["model-download"], spec["vllm"]
    assert "model-download" in started_by_up("docker-compose.vllm.yml")
    assert vllm["depends_on"]["model-download"]["condition"] == "service_completed_successfully"
    # The download step goes online unless told otherwise; the server never does.
    assert interpolate(download["environment"]["HF_HUB_OFFLINE"]) == "0"
    assert interpolate(download["environment"]["HF_HUB_OFFLINE"], {"HF_HUB_OFFLINE": "1"}) == "1"
    assert str(vllm["environment"]["HF_HUB_OFFLINE"]) == "1"
    cache = "/root/.cache/huggingface"
    assert f"hf-cache:{cache}" in download["volumes"] and f"hf-cache:{cache}" in vllm["volumes"]
    assert download["image"] == vllm["image"]  # huggingface_hub comes with the vLLM image
    assert download["entrypoint"] == ["python3", "-c"]
    [script] = download["command"]
    compile(script, "model-download", "exec")
    assert "snapshot_download" in script and "$" not in script
    assert spec["kg"]["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert "/health" in " ".join(vllm["healthcheck"]["test"])


def test_vllm_uses_the_gpu_and_no_unknown_vllm_variables() -> None:
    vllm = services("docker-compose.vllm.yml")["vllm"]
    gpu = vllm["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia"
    # vLLM warns about every VLLM_* variable it does not define.
    assert not [k for k in vllm["environment"] if k.startswith("VLLM_")]


# -- Dockerfile ---------------------------------------------------------------------------------

def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name) and version, line
            pins[name] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_dockerfile_pins_its_base_and_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [base] = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert "pip install --no-deps -r requirements.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile and "pip check" in dockerfile
    pins = requirement_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        name = canonical(re.split(r"[\[<>=!~; ]", dependency, maxsplit=1)[0])
        assert name in pins, f"{name} (pyproject.toml) is not pinned in requirements.txt"
    assert "llama-cpp-python" not in pins  # the image embeds no model


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    assert copied <= allowed and copied >= {"requirements.txt", "pyproject.toml", "kg",
                                            "migrations"}
