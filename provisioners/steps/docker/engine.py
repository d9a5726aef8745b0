"""The engine CLI (docker or podman) and compose on the docker host, through a Target (argv only)."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field, replace

from provisioners.backends.engine import choose_engine
from provisioners.backends.target import Target
from provisioners.config.docker import VENV, DockerDeployment
from provisioners.core.errors import tail
from provisioners.facts.docker import (
    ContainerInspect,
    ContainerLogs,
    Containers,
    EngineFact,
    ImageInspect,
    ProjectServices,
    compose_config_services,
    container_health,
    container_running,
    image_labels,
)


# =============================================================================== the host
@dataclass
class DockerHost:
    """The engine CLI (docker or podman) and compose on the docker host, through a Target (argv only)."""

    target: Target
    binary: str = "docker"
    compose: tuple[str, ...] = ("docker", "compose")
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_deployment(cls, target: Target, d: DockerDeployment, binary: str | None = None) -> DockerHost:
        binary = binary or choose_engine(configured=d.engine_host.binary).binary
        podman = posixpath.basename(binary) == "podman"
        if d.engine_host.compose:
            compose = tuple(d.engine_host.compose)
        elif podman:
            compose = ("podman-compose",)
        else:
            compose = (binary, "compose")
        env: dict[str, str] = {}
        if podman and (d.engine_host.podman_runtime or d.engine_host.podman_ulimits):
            env["CONTAINERS_CONF"] = posixpath.join(d.deploy_dir, "containers.conf")
        return cls(target, binary, compose, env)

    def podman_conf(self, d: DockerDeployment) -> str | None:
        """containers.conf for podman on hosts whose limits are below podman's defaults (see DOCKER.md)."""
        if "CONTAINERS_CONF" not in self.env:
            return None
        lines = ["# written by provisioners/steps/docker/engine.py (engine_host in deploy/docker/deployment.yaml)",
                 "[containers]"]
        if d.engine_host.podman_ulimits:
            items = ", ".join(f'"{k}={v}:{v}"' for k, v in sorted(d.engine_host.podman_ulimits.items()))
            lines.append(f"default_ulimits = [{items}]")
        if d.engine_host.podman_runtime:
            lines += ["[engine]", f'runtime = "{d.engine_host.podman_runtime}"']
        return "\n".join(lines) + "\n"

    def prepare(self, d: DockerDeployment) -> None:
        """Write the podman containers.conf before the first engine call (no-op for docker)."""
        conf = self.podman_conf(d)
        if conf is not None and self.target.read_text(self.env["CONTAINERS_CONF"]) != conf:
            self.target.put(self.env["CONTAINERS_CONF"], conf, 0o644)

    @property
    def is_podman(self) -> bool:
        return posixpath.basename(self.binary) == "podman"

    def run(self, *args: str, **kw):
        env = {**self.env, **kw.pop("env", {})}
        return self.target.run([self.binary, *args], env=env or None, **kw)

    def must(self, *args: str, what: str, step: str | None = None, **kw):
        env = {**self.env, **kw.pop("env", {})}
        return self.target.must([self.binary, *args], what=what, step=step, env=env or None, **kw)

    def compose_run(self, project: str, file: str, *args: str, **kw):
        env = {**self.env, **kw.pop("env", {})}
        return self.target.run([*self.compose, "-p", project, "-f", file, *args], env=env or None, **kw)

    def available(self) -> tuple[bool, str]:
        """(ok, why): the engine answers `info` and compose is there."""
        r = self.run("info", "--format", "{{json .}}" if not self.is_podman else "{{.Host.OCIRuntime.Name}}",
                     timeout=60)
        if r.rc == 127:
            return False, f"`{self.binary}` is not installed on this host"
        if r.failed:
            return False, f"`{self.binary} info` failed: {tail(r.stderr or r.stdout, 3)}"
        c = self.target.run([*self.compose, "version"], env=self.env or None, timeout=60)
        if c.failed:
            return False, f"`{' '.join(self.compose)} version` failed: {tail(c.stderr or c.stdout, 3)}"
        return True, f"{self.binary} and {' '.join(self.compose)} answer"

    # -- facts (provisioners/facts/docker.py) ----------------------------------------------
    def read(self, fact: EngineFact, *, timeout: float = 60):
        """Read an engine fact with this host's binary and environment."""
        return replace(fact, binary=self.binary, env=dict(self.env)).read(self.target, timeout=timeout)

    def image_inspect(self, ref: str) -> dict | None:
        return self.read(ImageInspect(ref=ref))

    def image_labels(self, ref: str) -> dict[str, str] | None:
        return image_labels(self.image_inspect(ref))

    def inspect(self, name: str) -> dict | None:
        return self.read(ContainerInspect(name=name))

    def health(self, name: str) -> str | None:
        return container_health(self.inspect(name))

    def running(self, name: str) -> bool:
        return container_running(self.inspect(name))

    def drive_healthcheck(self, name: str) -> None:
        """podman schedules healthchecks with systemd timers; where systemd is not PID 1 nothing runs
        them, so we run the container's own configured check (`podman healthcheck run`)."""
        if self.is_podman:
            self.run("healthcheck", "run", name, timeout=60)

    def logs(self, name: str, lines: int = 80) -> str:
        return self.read(ContainerLogs(name=name, lines=lines))

    def containers(self, all_: bool = True) -> list[dict[str, str]]:
        """[{name, image, state, id}] of every container on the host (ps -a)."""
        return self.read(Containers(all=all_))

    def compose_services(self, project: str, compose_file: str) -> tuple[str, dict[str, str]]:
        """({"how"}, {service: image}): `compose config` where the tool has it (docker compose), else the
        project's containers by their compose labels (podman-compose 1.0.3 has no `config`)."""
        r = self.compose_run(project, compose_file, "config", timeout=120)
        services = compose_config_services(r.stdout) if r.succeeded else None
        if services is not None:
            return "compose config", services
        return (f"containers labelled com.docker.compose.project={project} (`compose config` failed rc={r.rc})",
                self.read(ProjectServices(project=project)))

    def kernel_dumps(self, runtime_image: str, build_image: str, tmp: str,
                     python: str = f"{VENV}/bin/python") -> dict[str, str]:
        """`cuobjdump -lelf` of the runtime image's vllm/_C*.so, run with the build image's cuobjdump
        (the runtime stage has no CUDA toolkit, by design)."""
        find = ("import glob, importlib.util, os; s = importlib.util.find_spec('vllm'); "
                "p = list(s.submodule_search_locations)[0]; "
                "print('\\n'.join(sorted(glob.glob(os.path.join(p, '_C*.so')) + glob.glob(os.path.join(p, '_moe_C*.so')))))")
        r = self.must("run", "--rm", "--entrypoint", python, runtime_image, "-c", find, what="list vllm kernels")
        libs = [line.strip() for line in r.stdout.splitlines() if line.strip().endswith(".so")]
        cid = self.must("create", runtime_image, what="create from the runtime image").stdout.strip().splitlines()[-1]
        out: dict[str, str] = {}
        try:
            self.target.must(["mkdir", "-p", tmp])
            for lib in libs:
                self.must("cp", f"{cid}:{lib}", posixpath.join(tmp, posixpath.basename(lib)), what=f"copy {lib}")
        finally:
            self.run("rm", "-f", cid)
        for lib in libs:
            name = posixpath.basename(lib)
            r = self.run("run", "--rm", "-v", f"{tmp}:/k:ro", "--entrypoint", "cuobjdump", build_image, "-lelf",
                         f"/k/{name}", timeout=300)
            out[name] = r.stdout
        return out
