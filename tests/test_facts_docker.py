"""The container-engine facts parse what docker and podman print (canned output, no engine needed)."""
from __future__ import annotations

import json

import pytest

from provisioners.facts.docker import (
    ContainerArgv,
    ContainerInspect,
    ContainerMemory,
    Containers,
    ImageInspect,
    ProjectContainers,
    ProjectServices,
    ReleaseDirs,
    compose_config_services,
    container_health,
    container_running,
    image_labels,
    parse_size,
)


@pytest.mark.parametrize("fact, argv", [
    (ImageInspect(ref="r:1"), ["docker", "image", "inspect", "r:1"]),
    (ContainerInspect(name="c", binary="podman"), ["podman", "container", "inspect", "c"]),
    (Containers(), ["docker", "ps", "--format", "{{json .}}", "-a"]),
    (Containers(all=False), ["docker", "ps", "--format", "{{json .}}"]),
    (ContainerArgv(name="c"), ["docker", "exec", "c", "cat", "/proc/1/cmdline"]),
    (ContainerMemory(name="c"), ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", "c"]),
    (ProjectServices(project="p"), ["docker", "ps", "-a", "--filter", "label=com.docker.compose.project=p",
                                    "--format", "{{json .}}"]),
])
def test_engine_fact_commands(fact, argv):
    assert fact.command() == argv


@pytest.mark.parametrize("stdout, want", [
    ("[]", None),
    ("", None),
    ('[{"Id": "a"}, {"Id": "b"}]', {"Id": "a"}),
])
def test_inspect_parses_first_record(stdout, want):
    assert ImageInspect(ref="x").parse(stdout) == want
    assert ContainerInspect(name="x").parse(stdout) == want


@pytest.mark.parametrize("info, labels", [
    (None, None),
    ({"Config": {"Labels": {"a": "1"}}}, {"a": "1"}),
    ({"Config": {"Labels": None}, "Labels": {"b": "2"}}, {"b": "2"}),   # podman
    ({"Config": {}}, {}),
])
def test_image_labels(info, labels):
    assert image_labels(info) == labels


@pytest.mark.parametrize("info, health, running", [
    (None, None, False),
    ({"State": {"Running": True, "Health": {"Status": "healthy"}}}, "healthy", True),
    ({"State": {"Running": True, "Healthcheck": {"Status": "starting"}}}, "starting", True),   # podman 4
    ({"State": {"Running": True}}, "running-no-healthcheck", True),
    ({"State": {"Running": False, "Status": "exited"}}, "exited", False),
])
def test_container_health_and_running(info, health, running):
    assert container_health(info) == health
    assert container_running(info) is running


DOCKER_PS = "\n".join(json.dumps(r) for r in [
    {"Names": "phoenix-vllm", "Image": "img:1", "State": "running", "ID": "abc"},
    {"Names": "/old", "Image": "nvcr.io/tritonserver:24", "State": "exited", "ID": "def"}])
PODMAN_PS = json.dumps([{"Names": ["phoenix-vllm"], "Image": "img:1", "State": "running", "Id": "abc"}])


@pytest.mark.parametrize("stdout, want", [
    ("", []),
    (DOCKER_PS, [{"name": "phoenix-vllm", "image": "img:1", "state": "running", "id": "abc"},
                 {"name": "old", "image": "nvcr.io/tritonserver:24", "state": "exited", "id": "def"}]),
    (PODMAN_PS, [{"name": "phoenix-vllm", "image": "img:1", "state": "running", "id": "abc"}]),
])
def test_containers_parse_docker_and_podman(stdout, want):
    assert Containers().parse(stdout) == want


@pytest.mark.parametrize("stdout, want", [
    ("", {}),
    (json.dumps({"Labels": "com.docker.compose.project=p,com.docker.compose.service=vllm", "Image": "i:1"}),
     {"vllm": "i:1"}),
    (json.dumps([{"Labels": {"com.docker.compose.service": "nginx"}, "Image": "n:1"},
                 {"Labels": {}, "Image": "other"}]), {"nginx": "n:1"}),
])
def test_project_services_from_labels(stdout, want):
    assert ProjectServices(project="p").parse(stdout) == want


@pytest.mark.parametrize("stdout, want", [
    # podman 4.3: one JSON array, Names a list, Labels a map
    ('[{"Names": ["phoenix-vllm"], "State": "running", "Labels": {"com.docker.compose.service": "vllm", '
     '"ai.phoenix.release": "5bbbf9f76921"}}, {"Names": ["p-nginx"], "State": "exited", '
     '"Labels": {"com.docker.compose.service": "nginx"}}]',
     [{"name": "phoenix-vllm", "service": "vllm", "release": "5bbbf9f76921", "running": True},
      {"name": "p-nginx", "service": "nginx", "release": None, "running": False}]),
    # docker: one object a line, Labels "k=v,k=v"
    ('{"Names": "vllm", "State": "running", "Labels": "com.docker.compose.service=vllm,ai.phoenix.release=abc"}\n',
     [{"name": "vllm", "service": "vllm", "release": "abc", "running": True}]),
    ("", []),
])
def test_project_containers_whatever_their_names(stdout, want):
    assert ProjectContainers(project="p").parse(stdout) == want
    assert ProjectContainers(project="p", binary="podman").command() == [
        "podman", "ps", "-a", "--filter", "label=com.docker.compose.project=p", "--format", "{{json .}}"]


@pytest.mark.parametrize("stdout, want", [
    ("name: p\nservices:\n  vllm:\n    image: i:1\n  nginx: {}\n", {"vllm": "i:1", "nginx": ""}),
    ("WARN something\nservices:\n  a:\n    image: x\n", {"a": "x"}),
    ("no such command", None),
])
def test_compose_config_services(stdout, want):
    assert compose_config_services(stdout) == want


def test_container_argv_splits_nul_separated_cmdline():
    assert ContainerArgv(name="c").parse("/opt/vllm/bin/python\0-m\0vllm\0") == ["/opt/vllm/bin/python", "-m", "vllm"]


@pytest.mark.parametrize("stdout, want", [
    ("1.5GiB / 8GiB\n", 1610612736),
    ("620MB / 2GB", 620 * 1024**2),
    ("", None),
])
def test_container_memory(stdout, want):
    assert ContainerMemory(name="c").parse(stdout) == want


@pytest.mark.parametrize("text, want", [("1.5GiB", 1610612736), ("1gb", 1073741824), ("512m", 536870912),
                                        ("42", 42), (" 2 KiB ", 2048)])
def test_parse_size(text, want):
    assert parse_size(text) == want


def test_parse_size_rejects_garbage():
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_release_dirs_keep_only_release_ids_in_order():
    assert ReleaseDirs("/r").parse("f71337ec950a\nREADME\n5bbbf9f76921\nabc\n") == ["f71337ec950a", "5bbbf9f76921"]
