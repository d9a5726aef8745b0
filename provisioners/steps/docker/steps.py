"""The Steps of the Docker target (check/apply/check), all on the docker host."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import posixpath
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from provisioners.backends.target import Target
from provisioners.config.docker import (
    CONTAINER_MODELS,
    LABEL_NS,
    VENV,
    DebootstrapBase,
    DockerDeployment,
    DockerModel,
    TritonCleanup,
)
from provisioners.core.errors import CommandFailed, ProvisionError, tail
from provisioners.core.progress import Heartbeat, emit
from provisioners.core.step import Observed, Step
from provisioners.facts.docker import ProjectContainers, ReleaseDirs
from provisioners.scripts import read as read_script
from provisioners.steps.docker.engine import DockerHost
from provisioners.steps.docker.release import Release, _sha
from provisioners.steps.docker.render import DIGEST_ARG


# =============================================================================== the steps
class ReleaseFiles(Step):
    """The release dir: every rendered file plus MANIFEST.json (sha256 of each). Never rewritten
    once complete, so each previous release is the backup of its configuration (seed 004 rollback)."""

    name = "docker-release-files"

    def __init__(self, rel: Release, host: DockerHost, *, extra_ca: Sequence[str] = ()):
        self.rel, self.host = rel, host
        self.extra_ca = list(extra_ca)

    def _ca_files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for pattern in self.rel.deployment.build.extra_ca_certs:
            for p in sorted(glob.glob(os.path.expanduser(pattern))):
                if p.endswith(".crt") and os.path.isfile(p):
                    out[f"ca/{os.path.basename(p)}"] = Path(p).read_bytes()
        return out

    def check(self, target: Target) -> Observed:
        rel = self.rel
        state: dict[str, Any] = {"release": rel.release_id, "dir": rel.dir}
        manifest = target.read_text(posixpath.join(rel.dir, "MANIFEST.json"))
        if manifest != rel.files["MANIFEST.json"]:
            return Observed(False, {**state, "complete": False}, f"release {rel.release_id} is not written")
        bad = []
        for name, content in rel.files.items():
            if target.read_text(posixpath.join(rel.dir, name)) != content:
                bad.append(name)
        conf = self.host.podman_conf(rel.deployment)
        if conf is not None and target.read_text(self.host.env["CONTAINERS_CONF"]) != conf:
            bad.append("containers.conf")
        for name, data in self._ca_files().items():
            if target.get(posixpath.join(rel.dir, name)) != data:
                bad.append(name)
        if not target.exists(posixpath.join(rel.dir, "wheels")):
            bad.append("wheels/")
        if bad:
            return Observed(False, {**state, "complete": False}, f"release {rel.release_id}: {', '.join(bad)} differ")
        return Observed(True, {**state, "complete": True}, f"release {rel.release_id} written at {rel.dir}")

    def apply(self, target: Target, observed: Observed) -> None:
        rel = self.rel
        for name, content in sorted(rel.files.items()):
            if name != "MANIFEST.json":
                target.put(posixpath.join(rel.dir, name), content, 0o644)
        for name, data in self._ca_files().items():
            target.put(posixpath.join(rel.dir, name), data, 0o644)
        target.put(posixpath.join(rel.dir, "ca", "README"), "extra CA certificates for the builder stage only\n")
        conf = self.host.podman_conf(rel.deployment)
        if conf is not None:
            target.put(self.host.env["CONTAINERS_CONF"], conf, 0o644)
        target.must(["mkdir", "-p", posixpath.join(rel.dir, "wheels"), rel.models_dir, rel.wheel_cache],
                    step=self.name)
        target.put(posixpath.join(rel.dir, "MANIFEST.json"), rel.files["MANIFEST.json"], 0o644)  # last: "complete"


class BaseImage(Step):
    """A Debian base image made locally: debootstrap into a temp dir, then `import` (no registry)."""

    name = "docker-base-image"

    def __init__(self, host: DockerHost, spec: DebootstrapBase, *, work_dir: str, log_path: str | None = None):
        self.host, self.spec, self.work_dir, self.log_path = host, spec, work_dir, log_path

    def check(self, target: Target) -> Observed:
        info = self.host.image_inspect(self.spec.image)
        labels = ((info or {}).get("Config") or {}).get("Labels") or {}
        want = self.digest
        state = {"image": self.spec.image, "present": info is not None, "spec": labels.get(f"{LABEL_NS}.base.spec")}
        if info is None:
            return Observed(False, state, f"no image {self.spec.image}")
        if labels.get(f"{LABEL_NS}.base.spec") != want:
            return Observed(False, state, f"{self.spec.image} was made from another spec")
        return Observed(True, state, f"{self.spec.image} present (debootstrap {self.spec.suite})")

    @property
    def digest(self) -> str:
        return _sha(self.spec.model_dump_json())[:12]

    def apply(self, target: Target, observed: Observed) -> None:
        root = posixpath.join(self.work_dir, f"rootfs-{self.digest}")
        target.run(["rm", "-rf", root])
        target.must(["debootstrap", "--variant=minbase", "--include=" + ",".join(self.spec.include),
                     self.spec.suite, root, self.spec.mirror], what="debootstrap failed", step=self.name,
                    log_path=self.log_path, progress=f"{self.name}: debootstrap {self.spec.suite}", timeout=3600)
        target.run(["rm", "-rf", posixpath.join(root, "var/cache/apt/archives"), posixpath.join(root, "var/lib/apt/lists")])
        target.must(["mkdir", "-p", posixpath.join(root, "var/lib/apt/lists/partial"),
                     posixpath.join(root, "var/cache/apt/archives/partial")], step=self.name)
        script = ('set -e; tar -C "$1" -c . | "$2" import --change "$3" --change "$4" - "$5"')
        env = dict(self.host.env)
        target.must(["/bin/sh", "-c", script, "import", root, self.host.binary, 'CMD ["/bin/bash"]',
                     f"LABEL {LABEL_NS}.base.spec={self.digest}", self.spec.image],
                    env=env or None, what="image import failed", step=self.name, log_path=self.log_path,
                    timeout=1800)
        target.run(["rm", "-rf", root])


class ImageBuild(Step):
    """The release's images, tagged by the digest of what they are built from.

    check: each image exists and carries `ai.phoenix.build.digest` = that digest.
    apply: build the missing ones (builder stage tagged `<tag>-build` too), then copy the built
    vLLM wheel out of the builder into the wheel cache (keyed by commit/torch/arch/FA/patches), so
    the next build of the same inputs reuses it instead of compiling.
    """

    name = "docker-image"

    def __init__(self, rel: Release, host: DockerHost, *, log_path: str | None = None):
        self.rel, self.host, self.log_path = rel, host, log_path
        self.build_seconds: dict[str, float] = {}

    def check(self, target: Target) -> Observed:
        state: dict[str, Any] = {}
        missing = []
        for img in self.rel.images:
            labels = self.host.image_labels(img.ref)
            ok = labels is not None and labels.get(f"{LABEL_NS}.build.digest") == self.rel.build_digest
            state[img.role] = img.ref if ok else None
            if not ok:
                missing.append(img.ref)
        if missing:
            return Observed(False, state, f"missing images: {', '.join(missing)}")
        return Observed(True, state, f"images {self.rel.build_digest} present")

    def _seed_cache(self, target: Target) -> None:
        """Seed wheels and the cache go into the release's build context (`wheels/`), by hard link."""
        ctx = posixpath.join(self.rel.dir, "wheels")
        srcs = [self.rel.wheel_cache]
        script = ('set -e; ctx="$1"; shift; for s in "$@"; do [ -e "$s" ] || continue; '
                  'if [ -d "$s" ]; then cp -al "$s"/. "$ctx"/ 2>/dev/null || cp -a "$s"/. "$ctx"/; '
                  'else ln -f "$s" "$ctx"/ 2>/dev/null || cp -f "$s" "$ctx"/; fi; done')
        seeds = [p for pat in self.rel.deployment.build.seed_wheels for p in sorted(glob.glob(pat))]
        target.must(["/bin/sh", "-c", script, "seed-wheels", ctx, *srcs, *seeds], step=self.name,
                    what="could not fill the build context's wheel cache")

    def _harvest_wheel(self, target: Target) -> None:
        cid = self.host.must("create", self.rel.build_image, "true", what="create from the build image",
                             step=self.name).stdout.strip().splitlines()[-1]
        try:
            target.must(["mkdir", "-p", self.rel.wheel_cache], step=self.name)
            r = self.host.run("cp", f"{cid}:/opt/phoenix/dist/.", self.rel.wheel_cache + "/", timeout=600)
            if r.failed:
                emit(f"{self.name}: no wheel to cache ({tail(r.stderr, 1)})")
        finally:
            self.host.run("rm", "-f", cid, timeout=120)

    def apply(self, target: Target, observed: Observed) -> None:
        self._seed_cache(target)
        net = ["--network", self.rel.deployment.build.network] if self.rel.deployment.build.network else []
        for img in self.rel.images:
            if observed.state.get(img.role):
                continue
            argv = ["build", "-f", posixpath.join(self.rel.dir, img.dockerfile), "-t", img.ref,
                    "--build-arg", f"{DIGEST_ARG}={self.rel.build_digest}", *net]
            if self.host.is_podman:
                argv += ["--format", "docker"]     # OCI format drops SHELL (bash -o pipefail) and HEALTHCHECK
            if img.target:
                argv += ["--target", img.target]
            for k, v in img.build_args:
                argv += ["--build-arg", f"{k}={v}"]
            argv.append(self.rel.dir)
            start = time.monotonic()
            self.host.must(*argv, what=f"build of {img.ref} failed", step=self.name, log_path=self.log_path,
                           progress=f"{self.name}: build {img.role}", timeout=self.rel.deployment.build.timeout_s)
            self.build_seconds[img.role] = round(time.monotonic() - start, 1)
        if not observed.state.get("vllm-build") and self.rel.flavour == "cuda":
            self._harvest_wheel(target)


class ModelFiles(Step):
    """The model volume: each configured model's files on the host, made with the image's own Python.

    tiny-llama / dummy-config: generated (provisioners/scripts/make_model.py, no hub here);
    hub: downloaded once with huggingface_hub into the volume, so the server starts offline.
    """

    name = "docker-models"

    def __init__(self, rel: Release, host: DockerHost, models: Sequence[DockerModel], *, log_path: str | None = None):
        self.rel, self.host, self.models, self.log_path = rel, host, list(models), log_path

    def _dir(self, m: DockerModel) -> str:
        return posixpath.join(self.rel.models_dir, m.name)

    def _present(self, target: Target, m: DockerModel) -> bool:
        marker = target.read_text(posixpath.join(self._dir(m), "phoenix_model.json"))
        if marker is None:
            return False
        try:
            made = json.loads(marker)
        except ValueError:
            return False
        return made.get("kind") == m.kind and (m.kind != "hub" or made.get("hub_id") == m.hub_id)

    def check(self, target: Target) -> Observed:
        state = {m.name: self._present(target, m) for m in self.models}
        missing = [n for n, ok in state.items() if not ok]
        if missing:
            return Observed(False, state, f"models missing in {self.rel.models_dir}: {', '.join(missing)}")
        return Observed(True, state, f"{len(state)} model(s) in {self.rel.models_dir}")

    def apply(self, target: Target, observed: Observed) -> None:
        script_host = posixpath.join(self.rel.deployment.deploy_dir, "make_model.py")
        target.put(script_host, read_script("make_model.py"))
        for m in self.models:
            if observed.state.get(m.name):
                continue
            out = self._dir(m)
            target.must(["mkdir", "-p", self.rel.models_dir], step=self.name)
            # make_model.py writes <out>.partial and renames it: mount the parent, not <out> itself
            base = ["run", "--rm", "--network", "none", "-v", f"{self.rel.models_dir}:{CONTAINER_MODELS}",
                    "-v", f"{script_host}:/make_model.py:ro",
                    "--entrypoint", f"{VENV}/bin/python", "-e", "HF_HUB_OFFLINE=1", self.rel.vllm_image]
            if m.kind == "hub":
                target.must(["mkdir", "-p", out], step=self.name)
                base = ["run", "--rm", "-v", f"{out}:/out", "--entrypoint", f"{VENV}/bin/python",
                        "-e", "HF_HUB_OFFLINE=0", self.rel.vllm_image, "-c",
                        "import sys, json\nfrom huggingface_hub import snapshot_download\n"
                        "snapshot_download(sys.argv[1], local_dir='/out')\n"
                        "json.dump({'kind': 'hub', 'hub_id': sys.argv[1]}, open('/out/phoenix_model.json', 'w'))",
                        m.hub_id or ""]
            else:
                base += ["/make_model.py", m.kind, posixpath.join(CONTAINER_MODELS, m.name)]
            self.host.must(*base, what=f"could not prepare model {m.name}", step=self.name, log_path=self.log_path,
                           progress=f"{self.name}: {m.name}", timeout=3600)


def smoke(base_url: str, served: str, *, verify: Any = True, timeout: float = 120) -> tuple[bool, str]:
    """The release passes when /v1/models lists exactly the served model and a completion answers."""
    try:
        with httpx.Client(base_url=base_url, verify=verify, timeout=timeout) as c:
            r = c.get("/v1/models")
            ids = [m["id"] for m in r.json().get("data", [])] if r.status_code == 200 else []
            if ids != [served]:
                return False, f"/v1/models lists {ids}, want [{served!r}]"
            r = c.post("/v1/completions", json={"model": served, "prompt": "hello", "max_tokens": 4,
                                                "temperature": 0})
            text = r.json()["choices"][0].get("text") if r.status_code == 200 else None
            if text is None:
                return False, f"POST /v1/completions answered {r.status_code}: {r.text[:200]}"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"{served} listed and answering"


def wait_container_healthy(host: DockerHost, name: str, *, timeout: float, label: str) -> float:
    """Poll the engine's health status every 0.5 s (RemoteOpenAIServer's rhythm); fail fast when the
    container exits; podman without systemd gets its healthcheck driven here."""
    beat = Heartbeat(label)
    start = time.monotonic()
    last_drive = 0.0
    status = None
    while time.monotonic() - start < timeout:
        info = host.inspect(name)
        if info is None:
            raise ProvisionError(f"container {name} does not exist", step=label)
        st = info.get("State") or {}
        never_started = st.get("Status") in ("created", "configured") and time.monotonic() - start > 15
        if not st.get("Running") and (st.get("Status") in ("exited", "dead", "stopped") or never_started):
            raise ProvisionError(f"container {name} exited ({st.get('Status')}, code {st.get('ExitCode')}) "
                                 "before it was healthy", stderr=host.logs(name), step=label)
        status = host.health(name)
        if status == "healthy":
            beat.done(0)
            return time.monotonic() - start
        if host.is_podman and time.monotonic() - last_drive >= 2:
            host.drive_healthcheck(name)
            last_drive = time.monotonic()
        beat.tick(f"{name}: {status}")
        time.sleep(0.5)
    raise ProvisionError(f"container {name} not healthy within {timeout:.0f}s (last status {status})",
                         stderr=host.logs(name), step=label)


class ComposeRollout(Step):
    """The release's compose project is up, on this release, and vLLM is healthy (seed 004 Ph3.3).

    apply, strategy `canary`: the new vLLM starts as project `<project>-candidate` beside the
    running release and must pass (healthy, /v1/models, a completion) before anything of the
    running release is touched; then the switch (`up -d --force-recreate --remove-orphans`).
    strategy `replace` skips the candidate (one GPU cannot hold two engines). If the switched
    stack does not pass, the previous release's compose file (kept in its release dir, with its
    image) is brought up again and the step fails with both reasons (seed 004 Rollback Plan).
    """

    name = "docker-compose"

    def __init__(self, rel: Release, host: DockerHost, *, verify: Any = True, log_path: str | None = None):
        self.rel, self.host, self.verify, self.log_path = rel, host, verify, log_path
        self.events: list[dict[str, Any]] = []
        self.startup_seconds: float | None = None

    @property
    def project(self) -> str:
        return self.rel.deployment.project

    def check(self, target: Target) -> Observed:
        rel = self.rel
        names = {"vllm": rel.container_name, "nginx": f"{self.project}-nginx", "prometheus": f"{self.project}-prometheus"}
        state: dict[str, Any] = {"release": None, "services": {}, "serving": False}
        problems = []
        for svc, cname in names.items():
            info = self.host.inspect(cname)
            running = bool(info and (info.get("State") or {}).get("Running"))
            rel_label = ((info or {}).get("Config") or {}).get("Labels", {}) or {}
            state["services"][svc] = {"running": running, "release": rel_label.get(f"{LABEL_NS}.release")}
            if not running:
                problems.append(f"{svc} not running")
            elif rel_label.get(f"{LABEL_NS}.release") != rel.release_id:
                problems.append(f"{svc} runs release {rel_label.get(f'{LABEL_NS}.release')}")
        state["release"] = state["services"]["vllm"]["release"]
        state["serving"] = state["services"]["vllm"]["running"]
        # containers of the project this release does not name: a renamed vLLM (docker://NAME changed) or an
        # orphan; the switch removes them (what `up --remove-orphans` promises, and podman-compose 1.0.3 skips)
        others = [c for c in self.host.read(ProjectContainers(project=self.project)) if c["name"] not in names.values()]
        if others:
            state["others"] = sorted(c["name"] for c in others)
            problems.append(f"project {self.project} also has {', '.join(state['others'])}")
            old = next((c for c in others if c["service"] == "vllm"), None)
            if old is not None and state["release"] is None:     # the release serving under the old name
                state["release"], state["serving"] = old["release"], old["running"]
        if not problems:
            status = self.host.health(rel.container_name)
            if status != "healthy" and self.host.is_podman:
                self.host.drive_healthcheck(rel.container_name)
                status = self.host.health(rel.container_name)
            state["health"] = status
            if status != "healthy":
                problems.append(f"vllm health is {status}")
        if problems:
            return Observed(False, state, "; ".join(problems))
        return Observed(True, state, f"release {rel.release_id} up, vllm healthy")

    def _event(self, what: str, **kw) -> None:
        self.events.append({"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "event": what, **kw})
        emit(f"{self.name}: {what} {kw if kw else ''}")

    def _previous_compose(self, target: Target, release_id: str | None) -> str | None:
        if not release_id or release_id == self.rel.release_id:
            return None
        path = posixpath.join(self.rel.deployment.deploy_dir, "releases", release_id, "compose.yaml")
        return path if target.exists(path) else None

    def _candidate(self, target: Target) -> None:
        rel = self.rel
        proj = f"{self.project}-candidate"
        self.host.compose_run(proj, rel.candidate_file, "down", timeout=300)
        self._event("candidate-up", release=rel.release_id)
        r = self.host.compose_run(proj, rel.candidate_file, "up", "-d", timeout=900, log_path=self.log_path)
        try:
            if r.failed:
                raise CommandFailed("candidate compose up failed", argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout,
                                    step=self.name)
            wait_container_healthy(self.host, rel.container_name + "-candidate", timeout=rel.startup_timeout,
                                   label=f"{self.name}: candidate {rel.release_id}")
            ok, why = smoke(f"http://127.0.0.1:{rel.deployment.rollout.candidate_port}", rel.served_model)
            if not ok:
                raise ProvisionError(f"candidate {rel.release_id} failed its smoke test: {why}",
                                     stderr=self.host.logs(rel.container_name + "-candidate"), step=self.name)
            self._event("candidate-passed", release=rel.release_id, why=why)
        except ProvisionError as exc:
            self._event("candidate-failed", release=rel.release_id, why=exc.message)
            exc.message += "; the running release was not touched"
            raise
        finally:
            self.host.compose_run(proj, rel.candidate_file, "down", timeout=300)

    def _names(self, target: Target, compose_file: str) -> dict[str, str]:
        """{service: container_name} of a compose file on the docker host (this release's or a previous one)."""
        import yaml

        doc = yaml.safe_load(target.read_text(compose_file) or "") or {}
        return {svc: str(spec.get("container_name") or svc) for svc, spec in (doc.get("services") or {}).items()}

    def _up(self, target: Target, compose_file: str, label: str = "vllm") -> float:
        rel = self.rel
        names = self._names(target, compose_file)
        for c in self.host.read(ProjectContainers(project=self.project)):
            if c["name"] not in names.values():          # renamed or orphaned: it would hold the ports
                self._event("remove", container=c["name"], service=c["service"], release=c["release"])
                self.host.run("rm", "-f", c["name"], timeout=300)
        r = self.host.compose_run(self.project, compose_file, "up", "-d", "--force-recreate", "--remove-orphans",
                                  timeout=1800, log_path=self.log_path, progress=f"{self.name}: compose up")
        if r.failed:
            raise CommandFailed("compose up failed", argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout,
                                step=self.name, log_path=self.log_path)
        secs = wait_container_healthy(self.host, names.get("vllm", rel.container_name), timeout=rel.startup_timeout,
                                      label=f"{self.name}: {label}")
        for svc, side in names.items():
            if svc != "vllm" and not self.host.running(side):  # depends_on: service_healthy is not honoured by every compose
                self.host.run("start", side, timeout=120)
        return secs

    def apply(self, target: Target, observed: Observed) -> None:
        rel = self.rel
        prev = observed.state.get("release")
        prev_file = self._previous_compose(target, prev)
        if rel.deployment.rollout.strategy == "canary" and observed.state.get("serving") and prev != rel.release_id:
            self._candidate(target)
        self._event("switch", frm=prev, to=rel.release_id)
        try:
            self.startup_seconds = self._up(target, rel.compose_file)
            scheme = "https" if rel.tls else "http"
            ok, why = smoke(f"{scheme}://127.0.0.1:{rel.deployment.nginx.https_port}", rel.served_model,
                            verify=self.verify)
            if not ok:
                raise ProvisionError(f"release {rel.release_id} is up but fails through nginx: {why}", step=self.name)
            self._event("passed", release=rel.release_id)
        except ProvisionError as exc:
            if prev_file is None:
                self._event("failed-no-previous", release=rel.release_id, why=exc.message)
                raise
            self._event("rollback", to=prev, why=exc.message)
            try:
                self._up(target, prev_file, label=f"rollback to {prev}")
                self._event("rolled-back", to=prev)
            except ProvisionError as exc2:
                exc.message += f"; the rollback to {prev} failed too: {exc2.message}"
                raise exc from None
            exc.message += f"; rolled back to release {prev}, which is serving again"
            raise
        self.prune(target)

    def prune(self, target: Target) -> None:
        """Keep the newest `keep_releases` release dirs (the current one always)."""
        root = posixpath.join(self.rel.deployment.deploy_dir, "releases")
        names = ReleaseDirs(root).read(target)
        for n in names[self.rel.deployment.rollout.keep_releases:]:
            if n != self.rel.release_id:
                target.run(["rm", "-rf", posixpath.join(root, n)])


class TritonRemoval(Step):
    """No Triton left in service (seed 004 Phase 1 task 1), run only after vLLM passed (Rollback Plan).

    check: no container named in the list or running an image matching a pattern; none of the
    model dirs exists. apply: `inspect` of each container and the model dirs go to the archive
    (restorable), then the containers are removed and the dirs moved into the archive.
    """

    name = "docker-triton-removal"

    def __init__(self, cleanup: TritonCleanup, host: DockerHost, deploy: DockerDeployment, *,
                 protect: Sequence[str] = (), log_path: str | None = None):
        self.cleanup, self.host, self.deploy, self.log_path = cleanup, host, deploy, log_path
        self.protect = set(protect)

    @property
    def archive(self) -> str:
        return self.deploy.path(self.cleanup.archive_dir)

    def found(self, target: Target) -> tuple[list[dict[str, str]], list[str]]:
        pats = [re.compile(re.escape(p), re.I) for p in self.cleanup.image_patterns]
        conts = [c for c in self.host.containers()
                 if c["name"] not in self.protect
                 and (c["name"] in self.cleanup.containers or any(p.search(c["image"]) for p in pats))]
        dirs = [d for d in self.cleanup.model_dirs if target.exists(d)]
        return conts, dirs

    def check(self, target: Target) -> Observed:
        conts, dirs = self.found(target)
        state = {"containers": sorted(c["name"] for c in conts), "model_dirs": sorted(dirs)}
        if conts or dirs:
            return Observed(False, state, f"Triton left: containers {state['containers']}, model dirs {state['model_dirs']}")
        return Observed(True, state, "no Triton container or model repository left")

    def apply(self, target: Target, observed: Observed) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = posixpath.join(self.archive, stamp)
        target.must(["mkdir", "-p", dest], step=self.name)
        conts, dirs = self.found(target)
        for c in conts:
            info = self.host.run("container", "inspect", c["name"], timeout=60)
            target.put(posixpath.join(dest, "containers", f"{c['name']}.json"), info.stdout or "[]")
            self.host.must("rm", "-f", c["name"], what=f"could not remove Triton container {c['name']}", step=self.name)
        for d in dirs:
            to = posixpath.join(dest, "model_dirs", d.strip("/").replace("/", "__"))
            target.must(["mkdir", "-p", posixpath.dirname(to)], step=self.name)
            target.must(["mv", d, to], what=f"could not archive {d}", step=self.name)
        target.put(posixpath.join(dest, "ARCHIVE.json"),
                   json.dumps({"containers": [c["name"] for c in conts], "images": [c["image"] for c in conts],
                               "model_dirs": {d: posixpath.join(dest, "model_dirs", d.strip('/').replace('/', '__'))
                                              for d in dirs}}, indent=2))
