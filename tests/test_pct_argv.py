"""The exact `pct` command lines the suite runs, field by field of ContainerConfig.

No real system is needed: these tests RECORD command lines. `Recorder` is a Backend whose
run() records each argv and answers from a small in-memory Proxmox (`FakePve`: status,
config, clone, create, set, resize, start, stop, exec, push), so PctDriver and PctBackend
can be driven through a whole converge without a hypervisor. What real `pct` (or the
stand-in in tests/pct_standin/pct) does with these lines is tested in test_container_lxc.py.
"""
from __future__ import annotations

import json
import re
import shlex
import sys

import pytest

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.pct import GUEST_ENV, PctBackend, push_argv
from provisioners.facts.pve import parse_pve_config, parse_pve_options
from provisioners.steps.container.pct import format_pve_options, insert_raw_lxc_lines
from provisioners.config.phoenix import PhoenixConfig, load_config
from provisioners.steps.container import Container, PctDriver, mismatches, nvidia_lines
from provisioners.core.errors import RefusedTarget
from provisioners.config.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "pct_standin"))
import pve_schema  # noqa: E402  (tests/pct_standin/pve_schema.py: the schema read from pve-container)

ENV = list(GUEST_ENV)
NET0_921 = "name=eth0,bridge=vmbr0,ip=10.0.0.121/24,gw=10.0.0.1,hwaddr=52:54:00:67:89:21"


@pytest.fixture(scope="module")
def cfg() -> PhoenixConfig:
    return load_config(REPO_ROOT / "config" / "phoenix_lxc_configs.json")


@pytest.fixture
def ct(cfg):
    return cfg.container("921")


# ------------------------------------------------------------------------- recording host
FASTPLUG = {"description", "onboot", "startup", "protection", "hostname", "hookscript", "cores", "tags", "lock"}
HOTPLUG = {"memory", "swap", "cpulimit", "cpuunits"}


class FakePve:
    """Just enough Proxmox state for a converge: {ctid: {"opts", "lxc", "running", "pending", "snaps"}}.

    Every `pct` command line is first checked against the schema read from pve-container
    (tests/data/pve/schema.json via tests/pct_standin/pve_schema.py): a line real pct would refuse
    fails the test. The answers follow real pct where the driver depends on it (the stand-in's
    docstring lists them): `config` merges pending values unless `--current`, `set` on a running
    CT leaves non-hotplug options pending, `clone` refuses a full clone of a running CT without a
    snapshot, `resize` can fail inside its worker and still exit 0 (`resize_fails`).
    """

    def __init__(self, cts=None, majors="195 nvidia\n511 nvidia-uvm\n"):
        self.cts = cts or {}
        for ct in self.cts.values():
            ct.setdefault("pending", {})
            ct.setdefault("snaps", [])
        self.files: dict[str, bytes] = {"/proc/devices": f"Character devices:\n  1 mem\n{majors}\nBlock devices:\n".encode()}
        self.inside: dict[tuple[str, str], bytes] = {}
        self.resize_fails = False
        self.clone_fails = False

    def conf_text(self, ctid):
        ct = self.cts[ctid]
        text = "".join(f"{k}: {v}\n" for k, v in sorted(ct["opts"].items())) + \
            "".join(f"{k}: {v}\n" for k, v in ct["lxc"])
        if ct.get("pending"):
            text += "\n[pve:pending]\n" + "".join(f"{k}: {v}\n" for k, v in sorted(ct["pending"].items()))
        return text

    def merged(self, ctid):
        ct = self.cts[ctid]
        return {**ct["opts"], **ct.get("pending", {})}

    def answer(self, argv: list[str], data: bytes | None) -> tuple[int, str]:
        if argv[0] == "mktemp":
            return 0, "/tmp/phoenix-push.TEST\n"
        if argv[0] == "rm":
            return 0, ""
        if argv[0] == "cat" and len(argv) == 2:
            m = re.fullmatch(r"/etc/pve/lxc/(\d+)\.conf", argv[1])
            if m and m[1] in self.cts:
                return 0, self.conf_text(m[1])
            return (0, self.files[argv[1]].decode()) if argv[1] in self.files else (1, "")
        if argv[:2] == ["/bin/sh", "-c"]:
            path = argv[4]
            m = re.fullmatch(r"/etc/pve/lxc/(\d+)\.conf", path)
            if m:
                parsed = parse_pve_config(data.decode())
                self.cts[m[1]]["opts"], self.cts[m[1]]["lxc"] = parsed.options, parsed.lxc
            else:
                self.files[path] = data
            return 0, ""
        assert argv[0] == "pct", argv
        try:
            pos, opts, extra = pve_schema.parse_cli(argv[1], argv[2:])
        except pve_schema.SchemaError as exc:
            raise AssertionError(f"real pct would refuse {argv}: {exc}") from None
        sub, ctid = argv[1], pos.get("vmid")
        if ctid not in self.cts and sub != "create":
            return 255, f"Configuration file 'nodes/pve/lxc/{ctid}.conf' does not exist"
        ct = self.cts.get(ctid)
        if sub == "status":
            return 0, "status: " + ("running" if ct["running"] else "stopped")
        if sub == "config":
            shown = ct["opts"] if opts.get("current") == "1" else self.merged(ctid)
            return 0, "".join(f"{k}: {v}\n" for k, v in sorted(shown.items())) + "".join(f"{k}: {v}\n" for k, v in ct["lxc"])
        if sub == "pending":
            out = ""
            for k in sorted(set(ct["opts"]) | set(ct["pending"])):
                if k in ct["opts"]:
                    out += f"cur {k}: {ct['opts'][k]}\n"
                if k in ct["pending"]:
                    out += f"new {k}: {ct['pending'][k]}\n"
            return 0, out
        if sub == "listsnapshot":
            return 0, "".join(f"`-> {s}  2026-01-01 00:00:00\n" for s in ct["snaps"]) + "`-> current  You are here!\n"
        if sub == "clone":
            return self._clone(ctid, pos["newid"], opts)
        if sub == "create":
            pool, size = opts["rootfs"].split(":")
            self.cts[ctid] = {"opts": {"hostname": opts["hostname"], "unprivileged": opts["unprivileged"],
                                       "rootfs": f"{pool}:vm-{ctid}-disk-0,size={size}G"}, "lxc": [], "running": False,
                              "pending": {}, "snaps": []}
            return 0, ""
        if sub == "set":
            for k, v in opts.items():
                if k == "delete":
                    for key in v.split(","):
                        ct["opts"].pop(key, None)
                elif ct["running"] and not (k in FASTPLUG or k in HOTPLUG or re.fullmatch(r"net\d+", k)):
                    ct["pending"][k] = v
                else:
                    ct["opts"][k] = v
            return 0, ""
        if sub == "resize":
            if self.resize_fails:
                return 0, "zfs error: cannot set property: size is greater than available space\n"
            vol = parse_pve_options(ct["opts"]["rootfs"])
            vol["size"] = pos["size"]
            ct["opts"]["rootfs"] = format_pve_options(vol)
            return 0, ""
        if sub in ("start", "reboot"):
            if ct["opts"].get("template") == "1":
                return 255, "you can't start a CT if it's a template"
            ct["opts"].update(ct["pending"])
            ct["pending"] = {}
            ct["running"] = True
            ct["booted_hostname"] = ct["opts"].get("hostname", "")
            return 0, ""
        if sub == "stop":
            ct["running"] = False
            return 0, ""
        if sub == "push":
            self.inside[(ctid, argv[4])] = self.files[argv[3]]
            return 0, ""
        if sub == "exec":
            inner = list(extra)
            while inner and (inner[0] in ("env", "-i") or "=" in inner[0]):
                inner = inner[1:]
            if not ct["running"]:
                return 255, f"container '{ctid}' not running!"
            if inner == ["systemctl", "is-system-running"]:
                return 0, "running\n"
            if inner[:2] == ["mv", "-f"]:
                self.inside[(ctid, inner[3])] = self.inside.pop((ctid, inner[2]))
                return 0, ""
            if inner == ["cat", "/proc/sys/kernel/hostname"]:
                return 0, ct.get("booted_hostname", ct["opts"].get("hostname", "")) + "\n"
            if inner[0] == "cat":
                got = self.inside.get((ctid, inner[1]))
                return (0, got.decode()) if got is not None else (1, "")
            return 0, ""
        raise AssertionError(f"FakePve does not know {argv}")

    def _clone(self, src_id, new, opts):
        """pve-container API2/LXC.pm clone_vm: the rules at :2050-:2135."""
        src = self.cts[src_id]
        template = src["opts"].get("template") == "1"
        full = opts.get("full", "0" if template else "1") == "1"
        if "storage" in opts and not full:
            return 255, "parameter 'storage' not allowed for linked clones"
        if opts.get("snapname") and opts["snapname"] not in src["snaps"]:
            return 255, f"snapshot '{opts['snapname']}' does not exist"
        if full and src["running"] and not opts.get("snapname"):
            return 255, "Full clone of a running container is only possible from a snapshot"
        if self.clone_fails:
            return 255, "clone failed: rsync error: some files could not be transferred (code 23)"
        new_opts = {k: v for k, v in src["opts"].items() if k != "template"}
        net = parse_pve_options(new_opts.get("net0", ""))
        if net:
            net["hwaddr"] = "BC:24:11:AA:BB:CC"
            new_opts["net0"] = format_pve_options(net)
        new_opts["hostname"] = opts.get("hostname", new_opts.get("hostname"))
        new_opts["rootfs"] = f"{opts.get('storage', 'local')}:vm-{new}-disk-0,size=64G"
        self.cts[new] = {"opts": new_opts, "lxc": list(src["lxc"]), "running": False, "pending": {}, "snaps": []}
        return 0, ""


def _opts(args: list[str]) -> dict[str, str]:
    return pve_schema.parse_cli("set", ["100", *args])[1]


class Recorder(Backend):
    """Records every argv it is asked to run; answers from a FakePve."""

    scheme = "recorder"

    def __init__(self, pve: FakePve | None = None):
        super().__init__("pve")
        self.pve = pve or FakePve()
        self.calls: list[list[str]] = []

    def wrap(self, argv):
        return list(argv)

    def run(self, argv, *, input=None, env=None, cwd=None, timeout=None, log_path=None, progress=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        rc, out = self.pve.answer(argv, input)
        return CommandResult(argv=argv, rc=rc, stdout=out if rc == 0 else "", stderr="" if rc == 0 else out,
                             duration=0.0, backend=self.url, raw_stdout=out.encode() if rc == 0 else b"")

    def mutating(self) -> list[list[str]]:
        """The calls that change something on the Proxmox host or in a container."""
        keep = []
        for a in self.calls:
            if a[0] == "pct" and a[1] in ("clone", "create", "set", "resize", "start", "stop", "reboot", "push"):
                keep.append(a)
            elif a[:2] == ["/bin/sh", "-c"] and a[4].startswith("/etc/pve/"):
                keep.append(["write", a[4]])
        return keep


def observed_like(driver: PctDriver, ctid: str, ct) -> dict:
    """The observed state of a container that already matches `ct`."""
    return {**driver.desired(ctid, ct), "systemd": "running"}


# ------------------------------------------------------------------------- pct set, field by field
def _base(ct, **changes):
    state = {"hostname": ct.name, "cores": ct.cores, "memory_mb": ct.memory_mb, "swap_mb": ct.swap_mb,
             "ip": str(ct.network_config.ip), "gw": str(ct.network_config.gw), "bridge": ct.network_config.bridge,
             "iface": ct.network_config.name, "mac": ct.mac_address, "nesting": ct.nesting}
    state.update(changes)
    return state


SET_TABLE = [
    # (what drifted: observed values, the exact pct set options expected)
    ("name", {"hostname": "CT921"}, ["--hostname", "Template-VLLM-FP8"]),
    ("cores", {"cores": 4}, ["--cores", "12"]),
    ("cores unset", {"cores": None}, ["--cores", "12"]),
    ("memory_mb", {"memory_mb": 8192}, ["--memory", "65536"]),
    ("swap_mb", {"swap_mb": 512}, ["--swap", "4096"]),
    ("network_config.ip", {"ip": "10.0.0.201/24"}, ["--net0", NET0_921]),
    ("network_config.gw", {"gw": "10.0.0.254"}, ["--net0", NET0_921]),
    ("network_config.bridge", {"bridge": "vmbr1"}, ["--net0", NET0_921]),
    ("network_config.name", {"iface": "eth1"}, ["--net0", NET0_921]),
    ("mac_address", {"mac": "BC:24:11:00:00:01"}, ["--net0", NET0_921]),
    ("nesting", {"nesting": False}, ["--features", "nesting=1"]),
    ("several", {"cores": 1, "memory_mb": 512, "mac": None},
     ["--cores", "12", "--memory", "65536", "--net0", NET0_921]),
]


@pytest.mark.parametrize("field,drift,options", SET_TABLE, ids=[t[0] for t in SET_TABLE])
def test_pct_set_argv_per_field(ct, field, drift, options):
    assert PctDriver.set_argv("921", ct, _base(ct, **drift)) == ["pct", "set", "921", *options]


def test_pct_set_nothing_when_in_sync(ct):
    assert PctDriver.set_argv("921", ct, _base(ct)) is None


def test_pct_set_everything_for_a_fresh_container(ct):
    assert PctDriver.set_argv("921", ct, {}) == [
        "pct", "set", "921", "--hostname", "Template-VLLM-FP8", "--cores", "12", "--memory", "65536",
        "--swap", "4096", "--net0", NET0_921, "--features", "nesting=1"]


def test_net0_keeps_keys_it_does_not_manage(ct):
    argv = PctDriver.set_argv("921", ct, _base(ct, mac="BC:24:11:00:00:01"),
                              current_net0={"name": "eth0", "bridge": "vmbr0", "firewall": "1", "type": "veth",
                                            "hwaddr": "BC:24:11:00:00:01"})
    assert argv == ["pct", "set", "921", "--net0", NET0_921 + ",firewall=1,type=veth"]


def test_features_keep_other_flags_and_nesting_off_deletes(cfg, ct):
    argv = PctDriver.set_argv("921", ct, _base(ct, nesting=False), current_features={"keyctl": "1"})
    assert argv == ["pct", "set", "921", "--features", "keyctl=1,nesting=1"]
    no_nest = ct.model_copy(update={"nesting": False})
    assert PctDriver.set_argv("921", no_nest, _base(no_nest, nesting=True), current_features={"nesting": "1"}) == \
        ["pct", "set", "921", "--delete", "features"]


# ------------------------------------------------------------------------- clone / create / resize / push
def test_clone_argv(ct):
    assert PctDriver.clone_argv("921", ct) == [
        "pct", "clone", "901", "921", "--hostname", "Template-VLLM-FP8", "--full", "--storage", "quickOS-lxc-disks"]


def test_create_argv_carries_template_rootfs_and_unprivileged(cfg):
    t = cfg.container("901")
    assert PctDriver.create_argv("901", t) == [
        "pct", "create", "901", "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
        "--hostname", "Template-GPU", "--rootfs", "quickOS-lxc-disks:64", "--unprivileged", "1"]
    priv = t.model_copy(update={"unprivileged": False, "storage_size_gb": 8, "storage_pool": "local-lvm"})
    assert PctDriver.create_argv("901", priv)[-4:] == ["--rootfs", "local-lvm:8", "--unprivileged", "0"]


def test_resize_argv(ct):
    assert PctDriver.resize_argv("921", ct) == ["pct", "resize", "921", "rootfs", "128G"]


@pytest.mark.parametrize("mode,perms", [(0o644, "0644"), (0o600, "0600"), (0o755, "0755"), (0o4755, "4755")])
def test_push_argv_perms_octal(mode, perms):
    assert push_argv("921", "/tmp/f", "/etc/x", mode) == ["pct", "push", "921", "/tmp/f", "/etc/x", "--perms", perms]


def test_gpu_lines_for_gpu_assignment(ct):
    lines = nvidia_lines(ct.gpus, {"nvidia": 195, "nvidia-uvm": 511}, key_sep=": ",
                         allow_key="lxc.cgroup2.devices.allow")
    assert lines == [
        "lxc.cgroup2.devices.allow: c 195:* rwm",
        "lxc.cgroup2.devices.allow: c 511:* rwm",
        "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file",
        "lxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file",
        "lxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file",
        "lxc.mount.entry: /dev/nvidia-uvm dev/nvidia-uvm none bind,optional,create=file",
        "lxc.mount.entry: /dev/nvidia-uvm-tools dev/nvidia-uvm-tools none bind,optional,create=file",
        "lxc.mount.entry: /dev/nvidia-modeset dev/nvidia-modeset none bind,optional,create=file",
    ]


def test_gpu_lines_uvm_fallback_and_none_without_feature(cfg, ct):
    d = PctDriver(host=Recorder(FakePve(majors="195 nvidia\n")))
    assert "lxc.cgroup2.devices.allow: c 509:* rwm" in d.gpu_lines(ct)
    assert d.gpu_lines(ct.model_copy(update={"gpu_assignment": "none"})) == []
    assert d.gpu_lines(ct.model_copy(update={"features": ["vllm"]})) == []


def test_gpu_lines_go_before_snapshot_sections():
    conf = "cores: 2\nhostname: a\n\n[snap1]\ncores: 1\n"
    assert insert_raw_lxc_lines(conf, ["lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file"]) == \
        "cores: 2\nhostname: a\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n\n[snap1]\ncores: 1\n"


@pytest.mark.parametrize("field,value", [("application_script", "other.sh"), ("vllm_venv", "/opt/other"),
                                         ("role", "workload")])
def test_fields_of_other_layers_make_no_pct_argv(ct, field, value):
    other = ct.model_copy(update={field: value})
    assert PctDriver.set_argv("921", other, _base(ct)) is None
    assert PctDriver.clone_argv("921", other) == PctDriver.clone_argv("921", ct)


# ------------------------------------------------------------------------- exec / push through PctBackend
def test_pct_exec_argv_local_and_over_ssh():
    assert PctBackend("921").wrap(["id", "-u"]) == ["pct", "exec", "921", "--", *ENV, "id", "-u"]
    assert PctBackend("921", pct="/opt/pct").wrap(["true"])[0] == "/opt/pct"
    ssh = PctBackend("921", via_ssh="root@pve").wrap(["echo", "a b; $(x)"])
    assert ssh[:5] == ["ssh", "-o", "BatchMode=yes", "root@pve", "--"]
    assert shlex.split(ssh[5]) == ["pct", "exec", "921", "--", *ENV, "echo", "a b; $(x)"]


def test_pct_put_sequence_pushes_a_host_temp_file_and_removes_it():
    pve = FakePve({"921": {"opts": {}, "lxc": [], "running": True}})
    rec = Recorder(pve)
    b = PctBackend("921", pct="pct")
    b.hypervisor = rec
    data = b"line 1\n'; rm -rf / #$(reboot)\n"
    r = b.put("/etc/systemd/system/vllm_model_server.service", data, 0o644)
    assert r.succeeded
    staged = rec.calls[3][4]
    assert staged.startswith("/etc/systemd/system/vllm_model_server.service.phoenix-tmp.")
    assert rec.calls == [
        ["mktemp", "/tmp/phoenix-push.XXXXXXXX"],
        ["/bin/sh", "-c", 'cat > "$1"', "phoenix-put", "/tmp/phoenix-push.TEST"],
        ["pct", "exec", "921", "--", "mkdir", "-p", "/etc/systemd/system"],
        ["pct", "push", "921", "/tmp/phoenix-push.TEST", staged, "--perms", "0644"],
        ["pct", "exec", "921", "--", "mv", "-f", staged, "/etc/systemd/system/vllm_model_server.service"],
        ["rm", "-f", "/tmp/phoenix-push.TEST"],
    ]
    assert pve.inside[("921", "/etc/systemd/system/vllm_model_server.service")] == data


def test_pct_put_removes_the_temp_file_when_push_fails():
    rec = Recorder(FakePve({"921": {"opts": {}, "lxc": [], "running": True}}))
    real = rec.pve.answer
    rec.pve.answer = lambda argv, data: (1, "push failed") if argv[:2] == ["pct", "push"] else real(argv, data)
    b = PctBackend("921")
    b.hypervisor = rec
    assert b.put("/root/x", b"x").failed
    assert rec.calls[-1] == ["rm", "-f", "/tmp/phoenix-push.TEST"]


# ------------------------------------------------------------------------- a whole converge, recorded
def _pve_with_901(*, running=False, template=False, snaps=(), gpu_as_dev=False):
    """CT 901 as an operator's Proxmox host has it: stopped by default (a running ordinary 901 can
    only be cloned from a snapshot), or a template, with NVIDIA passthrough as raw lxc lines or
    as devN entries."""
    opts = {"hostname": "Template-GPU", "cores": "4", "memory": "8192", "swap": "512",
            "unprivileged": "1", "features": "nesting=1",
            "net0": "name=eth0,bridge=vmbr0,firewall=1,hwaddr=52:54:00:67:89:B1,ip=10.0.0.201/24,gw=10.0.0.1,type=veth",
            "rootfs": "quickOS-lxc-disks:vm-901-disk-0,size=64G"}
    lxc = [("lxc.cgroup2.devices.allow", "c 195:* rwm"),
           ("lxc.mount.entry", "/dev/nvidia0 dev/nvidia0 none bind,optional,create=file")]
    if template:
        opts["template"] = "1"
        opts["rootfs"] = "quickOS-lxc-disks:base-901-disk-0,size=64G"
    if gpu_as_dev:
        lxc = []
        for i, node in enumerate(["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]):
            opts[f"dev{i}"] = f"/dev/{node},gid=44"
    return FakePve({"901": {"opts": opts, "lxc": lxc, "running": running and not template, "snaps": list(snaps)}})


def test_converge_921_from_nothing_runs_exactly_these_commands(cfg, ct):
    rec = Recorder(_pve_with_901())
    step = Container("921", ct, cfg, PctDriver(host=rec))
    result = step.converge(None)
    assert result.changed and result.before == {"exists": False}
    staged = next(a[4] for a in rec.calls if a[:2] == ["pct", "push"])
    assert rec.mutating() == [
        ["pct", "clone", "901", "921", "--hostname", "Template-VLLM-FP8", "--full", "--storage", "quickOS-lxc-disks"],
        ["pct", "set", "921", "--cores", "12", "--memory", "65536", "--swap", "4096",
         "--net0", NET0_921 + ",firewall=1,type=veth"],
        ["pct", "resize", "921", "rootfs", "128G"],
        ["write", "/etc/pve/lxc/921.conf"],
        ["pct", "start", "921"],
        ["pct", "push", "921", "/tmp/phoenix-push.TEST", staged, "--perms", "0644"],
    ]
    conf = rec.pve.conf_text("921")
    assert "lxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file" in conf
    assert conf.count("lxc.mount.entry: /dev/nvidia0 dev/nvidia0") == 1          # inherited line kept, not doubled
    assert json.loads(rec.pve.inside[("921", "/etc/phoenix/provenance.json")])["origin"] == "clone:901"
    assert result.after["origin"] == "clone:901" and not mismatches(step.desired(), result.after)
    # nothing touched 901 except reading it
    assert all(a[2] != "901" or a[1] in ("status", "config", "clone") for a in rec.calls if a[0] == "pct")


def test_second_converge_runs_no_mutating_command(cfg, ct):
    rec = Recorder(_pve_with_901())
    step = Container("921", ct, cfg, PctDriver(host=rec))
    step.converge(None)
    rec.calls.clear()
    again = step.converge(None)
    assert again.status == "unchanged" and rec.mutating() == []


def test_memory_drift_is_one_pct_set(cfg, ct):
    rec = Recorder(_pve_with_901())
    step = Container("921", ct, cfg, PctDriver(host=rec))
    step.converge(None)
    rec.pve.cts["921"]["opts"]["memory"] = "1024"
    rec.calls.clear()
    fixed = step.converge(None)
    assert fixed.changed and fixed.before["memory_mb"] == 1024 and fixed.after["memory_mb"] == 65536
    assert rec.mutating() == [["pct", "set", "921", "--memory", "65536"]]


def test_unprivileged_mismatch_is_an_error_not_a_change(cfg, ct):
    pve = _pve_with_901()
    pve.cts["901"]["opts"]["unprivileged"] = "0"
    rec = Recorder(pve)
    with pytest.raises(Exception, match="only at create"):
        Container("921", ct, cfg, PctDriver(host=rec)).converge(None)
    assert not any(a[1] == "set" for a in rec.mutating())


def test_create_from_template_when_no_clone_source(cfg):
    data = cfg.model_dump(mode="json")
    data["lxc_configs"]["901"]["managed"] = True
    managed = PhoenixConfig.model_validate(data)
    rec = Recorder(FakePve())
    Container("901", managed.container("901"), managed, PctDriver(host=rec)).converge(None)
    assert rec.mutating()[0] == ["pct", "create", "901", "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
                                 "--hostname", "Template-GPU", "--rootfs", "quickOS-lxc-disks:64", "--unprivileged", "1"]


@pytest.mark.parametrize("ctid", ["901", "920", "950", "951"])
def test_unmanaged_containers_are_refused_before_any_command(cfg, ctid):
    rec = Recorder(_pve_with_901())
    with pytest.raises(RefusedTarget, match=f"refusing container {ctid}"):
        Container(ctid, cfg.container(ctid), cfg, PctDriver(host=rec))
    assert rec.calls == []


def test_parse_pct_config():
    cfgp = parse_pve_config("# notes\narch: amd64\ncores: 12\nnet0: name=eth0,bridge=vmbr0,ip=dhcp\n"
                            "lxc.cgroup2.devices.allow: c 195:* rwm\nlxc.cgroup2.devices.allow: c 509:* rwm\n"
                            "\n[snap]\ncores: 2\n")
    assert cfgp.get("cores") == "12" and cfgp.sub("net0") == {"name": "eth0", "bridge": "vmbr0", "ip": "dhcp"}
    assert cfgp.lxc == [("lxc.cgroup2.devices.allow", "c 195:* rwm"), ("lxc.cgroup2.devices.allow", "c 509:* rwm")]
