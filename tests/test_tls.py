"""provisioners/steps/tls/ against real parts: a step-ca built from Debian's sources, real openssl,
a local target in a tmp dir, the CA on a free port. No mocks.

The first run builds step-ca (apt-get install + go build, about a minute on 2 cores); later runs
reuse ~/.cache/phoenix/step-ca/<version>/step-ca.
"""
from __future__ import annotations

import datetime as dt
import http.server
import json
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest

from provisioners.backends.local import LocalBackend
from provisioners.core.step import Ledger
from provisioners.config.phoenix import TlsConfig
from provisioners.core.errors import CommandFailed, ProvisionError
from provisioners.core.progress import emit
from provisioners.core.secrets import MASK
from provisioners.backends.target import Target
from provisioners.facts.cert import (
    cert_fingerprint,
    inspect_cert,
    normalize_sans,
    remaining_fraction,
    split_pem,
    ssl_context,
    verify_chain,
)
from provisioners.steps.tls import LocalCa, ServiceCert, StepCaBinary, TlsMaterial

SANS = ["localhost", "127.0.0.1"]
needs_stepca = pytest.mark.real_target
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl on this machine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local() -> Target:
    return Target(LocalBackend())


@pytest.fixture(scope="module")
def tls_ledger(tmp_path_factory) -> Ledger:
    return Ledger(tmp_path_factory.mktemp("ledger") / "ledger.json")


@pytest.fixture(scope="module")
def binary(local, tls_ledger) -> StepCaBinary:
    """The cached step-ca; built on the first run (timed in the ledger)."""
    step = StepCaBinary()
    result = step.converge(local, ledger=tls_ledger)
    emit(f"step-ca binary: {result.status} in {result.duration:.1f}s ({step.path})")
    return step


@pytest.fixture(scope="module")
def ca_env(binary, local, tls_ledger, tmp_path_factory):
    """A bootstrapped CA in a tmp dir on a free port; stopped at the end of the module."""
    root = tmp_path_factory.mktemp("stepca")
    tls = TlsConfig(mode="bootstrap", ca_dir=str(root / "ca"), ca_port=free_port(),
                    cert_dir=str(root / "tls"), cert_lifetime_hours=24)
    ca = LocalCa(tls, binary)
    start = time.monotonic()
    result = ca.converge(local, ledger=tls_ledger)
    elapsed = time.monotonic() - start
    emit(f"CA bootstrap: {result.status} in {elapsed:.2f}s at {ca.url}")
    yield {"ca": ca, "tls": tls, "result": result, "elapsed": elapsed, "root": root}
    ca.stop(local)


@pytest.fixture
def ca(ca_env) -> LocalCa:
    return ca_env["ca"]


# ------------------------------------------------------------------- pure helpers (no CA)
def test_normalize_sans_dedupes_and_rejects_garbage():
    assert normalize_sans(["LocalHost", "127.0.0.1", "localhost."]) == SANS
    assert normalize_sans(["0:0::1"]) == ["::1"]
    with pytest.raises(ValueError, match="neither an IP"):
        normalize_sans(["bad name; rm -rf /"])
    with pytest.raises(ValueError, match="at least one SAN"):
        normalize_sans([])


# ----------------------------------------------------------------------------- binary
@needs_stepca
def test_binary_is_cached_by_debian_version_and_runs(binary, local, tls_ledger):
    deb, installed = StepCaBinary.debian_version(local)
    assert installed and deb
    assert Path(binary.path) == binary.cache_dir / binary.key(deb) / "step-ca"
    assert local.run([binary.path, "version"]).stdout.startswith(f"Smallstep CA/{deb} (linux/")
    again = StepCaBinary().converge(local, ledger=tls_ledger)
    assert again.status == "unchanged" and again.duration < 5


# --------------------------------------------------------------------------------- CA
@needs_stepca
def test_bootstrap_creates_a_running_ca_quickly(ca_env, local, tls_ledger):
    ca, result = ca_env["ca"], ca_env["result"]
    assert result.status == "changed"
    assert result.after["healthy"] and result.after["config"] == "current"
    assert ca_env["elapsed"] < 10, f"bootstrap took {ca_env['elapsed']:.1f}s"
    # key material is private; ca.json carries a badger db so ACME works too
    for name in ("root_ca.key", "intermediate_ca.key", "secrets/password", "secrets/provisioner.jwk.json"):
        assert (Path(ca.p(name)).stat().st_mode & 0o777) == 0o600, name
    assert b"ENCRYPTED PRIVATE KEY" in Path(ca.p("intermediate_ca.key")).read_bytes()
    conf = json.loads(Path(ca.p("ca.json")).read_text())
    assert conf["db"]["type"] == "badgerv2"
    assert "d" not in conf["authority"]["provisioners"][1]["key"]        # only the public JWK
    ctx = ssl_context(ca.root_pem())
    assert httpx.get(f"{ca.url}/acme/acme/directory", verify=ctx).json()["newOrder"]
    assert cert_fingerprint(ca.root_pem()) in Path(ca.p("step-ca.log")).read_text()
    # converged: a second pass changes nothing
    again = ca.converge(local, ledger=tls_ledger)
    assert again.status == "unchanged", again.note


@needs_stepca
def test_restart_and_config_drift_keep_the_same_ca(ca_env, local, tls_ledger):
    ca, tls = ca_env["ca"], ca_env["tls"]
    fp = cert_fingerprint(ca.root_pem())
    assert ca.stop(local)
    assert ca.check(local).satisfied is False
    assert ca.converge(local, ledger=tls_ledger).after == {**ca_env["result"].after}
    # a new port for the same CA dir: ca.json is rewritten, keys untouched, restarted there
    moved = LocalCa(tls.model_copy(update={"ca_port": free_port()}), ca.binary)
    r = moved.converge(local, ledger=tls_ledger)
    assert r.changed and r.after["healthy"] and r.after["root_fingerprint"] == fp
    assert ca.check(local).satisfied is False            # the old port is gone
    assert ca.converge(local, ledger=tls_ledger).after["root_fingerprint"] == fp
    assert ca.health() is None and ca.pid(local) is not None
    # a lost ca.json is written again from the keys on disk; the CA stays the same
    Path(ca.p("ca.json")).unlink()
    r = ca.converge(local, ledger=tls_ledger)
    assert r.before["config"] == "missing" and r.after["config"] == "current"
    assert r.after["root_fingerprint"] == fp and r.after["healthy"]


@needs_stepca
def test_partial_ca_dir_is_never_overwritten(binary, local, tmp_path):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "root_ca.key").write_text("precious")
    ca = LocalCa(TlsConfig(ca_dir=str(ca_dir), ca_port=free_port()), binary)
    with pytest.raises(ProvisionError, match="refusing to overwrite"):
        ca.converge(local)
    assert (ca_dir / "root_ca.key").read_text() == "precious"


# ------------------------------------------------------------------------ service cert
@needs_stepca
def test_issue_then_second_converge_is_unchanged(ca, local, tls_ledger, tmp_path):
    cert = ServiceCert(ca, local, str(tmp_path / "tls"), SANS, 24)
    first = cert.converge(local, ledger=tls_ledger)
    emit(f"cert issue: {first.duration:.2f}s")
    assert first.status == "changed" and first.before["serial"] is None
    assert first.after["sans"] == sorted(SANS) and first.duration < 10
    m = cert.material
    assert isinstance(m, TlsMaterial) and m.ca_url == ca.url and m.ca_root_path == ca.root_path
    assert (Path(m.key_path).stat().st_mode & 0o777) == 0o600
    chain = split_pem(Path(m.cert_path).read_text())
    assert len(chain) == 2 and "Intermediate" in inspect_cert(chain[1])["subject"]
    assert Path(m.ca_path).read_text() == ca.root_pem()
    # openssl agrees: leaf -> intermediate -> root
    r = local.run(["openssl", "verify", "-CAfile", m.ca_path, "-untrusted", m.cert_path, m.cert_path])
    assert r.succeeded and ": OK" in r.stdout, r
    second = cert.converge(local, ledger=tls_ledger)
    assert second.status == "unchanged" and not second.changed and second.after == first.after
    assert json.dumps(second.after) and len(json.dumps(second.after)) < 200       # small state


@needs_stepca
def test_near_expiry_cert_is_renewed_with_a_new_serial(ca, local, tls_ledger, tmp_path):
    cert = ServiceCert(ca, local, str(tmp_path / "tls"), SANS, 3)
    issued = cert.converge(local, ledger=tls_ledger).after
    info = cert.read()
    assert 3 * 3600 - 120 < (info["not_after"] - info["not_before"]).total_seconds() <= 3 * 3600 + 120
    # the same key, re-signed by the CA as a 3 h cert with 10 minutes left (under the 1/3 threshold)
    csr = local.must(["openssl", "req", "-new", "-key", cert.key_path, "-subj", "/CN=localhost",
                      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]).stdout
    now = dt.datetime.now(dt.UTC)
    old = ca.sign(csr, SANS, not_before=now - dt.timedelta(minutes=170), not_after=now + dt.timedelta(minutes=10))
    local.put(cert.cert_path, "".join(old))
    seen = cert.check(local)
    assert not seen.satisfied and "lifetime left" in seen.reason
    renewed = cert.converge(local, ledger=tls_ledger)
    assert renewed.status == "changed"
    assert renewed.after["serial"] not in (issued["serial"], seen.state["serial"])
    assert remaining_fraction(cert.read()) > 0.9
    assert cert.converge(local, ledger=tls_ledger).status == "unchanged"


@needs_stepca
def test_a_renewed_certificate_restarts_the_server_that_still_presents_the_old_one(ca, local, tls_ledger, tmp_path):
    """The TLS step renews the files at a third of the lifetime left; the running server keeps the certificate it
    read at start. The service's check sees the served leaf differ from the installed one and restarts it (seen on
    a real run: tls-service-cert changed, service unchanged, the served leaf the old one); then it is unchanged."""
    import dataclasses
    import sys

    from provisioners.config.engine import EngineConfig
    from provisioners.steps.service import Endpoint, SupervisedService, UnitModel
    from tests.stubs.safety_support import STUBS

    cert = ServiceCert(ca, local, str(tmp_path / "tls"), SANS, 3)
    cert.converge(local, ledger=tls_ledger)
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(sys.executable)
    (bindir / "vllm").symlink_to(STUBS / "fake_vllm")          # a /health server that reads its TLS files at start
    port = free_port()
    engine = EngineConfig.model_validate({"ModelConfig": {"model": "/m"}, "ServerConfig": {
        "host": "127.0.0.1", "port": port, "served_model_name": "tls-probe"}})
    unit = dataclasses.replace(UnitModel.build(vllm_bin=str(bindir / "vllm"), engine=engine, profile_env={},
                                               tls=(cert.key_path, cert.cert_path), name="phoenix_tls_probe.service"),
                               restart_sec=1)
    endpoint = Endpoint(base_url=f"https://127.0.0.1:{port}", served_model="tls-probe", model_dir="/m",
                        ca_file=cert.material.ca_root_path)
    svc = SupervisedService(unit, endpoint, state_dir=str(tmp_path / "state"), startup_timeout=60)

    def served() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ssl_context(Path(cert.material.ca_root_path).read_text()).wrap_socket(raw, server_hostname="localhost") as c:
            return inspect_cert(ssl.DER_cert_to_PEM_cert(c.getpeercert(binary_form=True)))["fingerprint"]

    try:
        assert svc.converge(local, ledger=tls_ledger).status == "changed"
        first = served()
        assert svc.check(local).satisfied
        # near expiry: the CA signs the same key for 10 more minutes; the TLS step renews it
        csr = local.must(["openssl", "req", "-new", "-key", cert.key_path, "-subj", "/CN=localhost",
                          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]).stdout
        now = dt.datetime.now(dt.UTC)
        local.put(cert.cert_path, "".join(ca.sign(csr, SANS, not_before=now - dt.timedelta(minutes=170),
                                                  not_after=now + dt.timedelta(minutes=10))))
        assert cert.converge(local, ledger=tls_ledger).status == "changed"
        installed = inspect_cert(split_pem(Path(cert.cert_path).read_text())[0])["fingerprint"]
        assert served() == first != installed                 # the server still presents what it read at start
        seen = svc.check(local)
        assert not seen.satisfied and "presents another certificate" in seen.reason, seen.reason
        assert svc.converge(local, ledger=tls_ledger).status == "changed"
        assert served() == installed
        assert svc.converge(local, ledger=tls_ledger).status == "unchanged"
    finally:
        svc.stop(local)


@needs_stepca
def test_san_change_reissues(ca, local, tls_ledger, tmp_path):
    cert_dir = str(tmp_path / "tls")
    first = ServiceCert(ca, local, cert_dir, SANS, 24).converge(local, ledger=tls_ledger)
    wider = ServiceCert(ca, local, cert_dir, [*SANS, "vllm.internal", "10.0.0.121"], 24)
    seen = wider.check(local)
    assert not seen.satisfied and "SANs" in seen.reason
    r = wider.converge(local, ledger=tls_ledger)
    assert r.changed and r.after["serial"] != first.after["serial"]
    assert r.after["sans"] == sorted(["localhost", "127.0.0.1", "vllm.internal", "10.0.0.121"])


@needs_stepca
def test_drift_in_key_or_mode_is_found_audited_and_fixed(ca, local, tls_ledger, tmp_path):
    cert = ServiceCert(ca, local, str(tmp_path / "tls"), SANS, 24)
    cert.converge(local, ledger=tls_ledger)
    Path(cert.key_path).chmod(0o644)
    assert "mode 644" in cert.check(local).reason
    local.must(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", cert.key_path])
    audit = cert.converge(local, audit=True, ledger=tls_ledger)
    assert audit.status == "drift" and "does not match" in audit.note
    assert not cert.check(local).satisfied                       # audit changed nothing
    fixed = cert.converge(local, ledger=tls_ledger)
    assert fixed.status == "changed" and cert.check(local).satisfied


@needs_stepca
def test_https_server_verified_with_the_root_only(ca, local, tmp_path):
    m = ServiceCert(ca, local, str(tmp_path / "tls"), SANS, 24)
    m.converge(local)
    mat = m.material

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello over step-ca TLS\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(mat.cert_path, mat.key_path)
    srv.socket = sctx.wrap_socket(srv.socket, server_side=True)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        root_only = ssl_context(Path(mat.ca_root_path).read_text())
        for host in ("localhost", "127.0.0.1"):
            r = httpx.get(f"https://{host}:{port}/", verify=root_only, timeout=5)
            assert r.status_code == 200 and r.text == "hello over step-ca TLS\n"
        # the chain the server sends, its SANs and its validity window
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                root_only.wrap_socket(raw, server_hostname="localhost") as tls_sock:
            peer = inspect_cert(ssl.DER_cert_to_PEM_cert(tls_sock.getpeercert(binary_form=True)))
        now = dt.datetime.now(dt.UTC)
        assert sorted(peer["sans"]) == sorted(SANS) and "Intermediate" in peer["issuer"]
        assert peer["not_before"] <= now < peer["not_after"]
        assert dt.timedelta(hours=23) < peer["not_after"] - now <= dt.timedelta(hours=24, minutes=1)
        # a name not in the SANs, and a client without our root, are refused
        with httpx.Client(verify=root_only, timeout=5) as client, \
                pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(f"https://127.0.0.1:{port}/", extensions={"sni_hostname": "not-in-sans.example"})
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://localhost:{port}/", verify=ssl.create_default_context(), timeout=5)
        # plain HTTP gets no answer
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        srv.shutdown()
        srv.server_close()


@needs_stepca
def test_one_time_token_cannot_be_replayed(ca, local, tmp_path):
    key = tmp_path / "k.pem"
    local.must(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
    csr = local.must(["openssl", "req", "-new", "-key", str(key), "-subj", "/CN=localhost",
                      "-addext", "subjectAltName=DNS:localhost"]).stdout
    ott = ca._token(["localhost"])
    ctx = ssl_context(ca.root_pem())
    first = httpx.post(f"{ca.url}/1.0/sign", json={"csr": csr, "ott": ott}, verify=ctx)
    again = httpx.post(f"{ca.url}/1.0/sign", json={"csr": csr, "ott": ott}, verify=ctx)
    assert (first.status_code, again.status_code) == (201, 401)


# ------------------------------------------------------------------------ existing CA
@needs_stepca
def test_existing_mode_pins_the_root_and_uses_the_planted_key(ca, local, tls_ledger, tmp_path):
    planted = tmp_path / "provisioner.jwk.json"
    planted.write_text(Path(ca.p("secrets/provisioner.jwk.json")).read_text())
    planted.chmod(0o600)
    fp = cert_fingerprint(ca.root_pem())
    colons = ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()
    tls = TlsConfig(mode="existing", ca_url=ca.url, root_fingerprint=colons, provisioner_key_file=str(planted),
                    provisioner=ca.tls.provisioner, cert_dir=str(tmp_path / "tls"), extra_sans=["127.0.0.1"])
    site = LocalCa(tls, state_dir=tmp_path / "state")
    r = site.converge(local, ledger=tls_ledger)
    assert r.status == "unchanged" and r.after["root_fingerprint"] == fp
    cert = ServiceCert.for_config(site, local, ["localhost"])
    assert cert.sans == SANS and cert.cert_path == str(tmp_path / "tls" / "server.crt")
    assert cert.converge(local, ledger=tls_ledger).changed
    # the site CA down: the installed cert still checks out against the pinned ca.crt
    down = LocalCa(tls.model_copy(update={"ca_url": f"https://localhost:{free_port()}"}), state_dir=tmp_path / "s2")
    assert not down.check(local).satisfied
    assert ServiceCert.for_config(down, local, ["localhost"]).check(local).satisfied
    assert Path(site.root_path).read_text() == ca.root_pem()
    assert verify_chain(split_pem(Path(cert.cert_path).read_text()), ca.root_pem()) is None
    # a wrong pin is refused, and an existing CA is never "fixed" by the suite
    wrong = LocalCa(tls.model_copy(update={"root_fingerprint": "00" * 32}), state_dir=tmp_path / "state")
    with pytest.raises(ProvisionError, match="no root with fingerprint"):
        wrong.converge(local)


# ---------------------------------------------------------------------------- secrets
@needs_stepca
def test_planted_secrets_never_reach_logs_or_ledger(ca_env, binary, local, tls_ledger, tmp_path):
    ca = ca_env["ca"]
    key_json = Path(ca.p("secrets/provisioner.jwk.json")).read_text().strip()
    d = json.loads(key_json)["d"]
    password = Path(ca.p("secrets/password")).read_text().strip()
    # plant them where a careless provisioner would leak them: a streamed command log, an error
    leak_log = tmp_path / "leak.log"
    r = local.run(["/bin/sh", "-c", 'echo "password=$1"; echo "key=$2"; echo "jwk=$3"; exit 3', "leak",
                   password, d, key_json], log_path=str(leak_log))
    err = CommandFailed("leaky step failed", argv=r.argv, rc=r.rc, stderr=r.stderr, log_path=str(leak_log))
    ServiceCert(ca, local, str(tmp_path / "x"), SANS).converge(local, ledger=tls_ledger)   # one more entry
    assert MASK in leak_log.read_text() and MASK in str(err) and MASK in repr(r)
    files = [leak_log, Path(ca.p("step-ca.log")), tls_ledger.path]
    if binary.log_path:
        files.append(Path(binary.log_path))
    texts = {str(f): f.read_text() for f in files if f.exists()} | {"error": str(err), "repr": repr(r)}
    assert tls_ledger.path.exists() and len(texts) >= 5
    for where, text in texts.items():
        for secret in (password, d, key_json):
            assert secret not in text, f"a planted secret shows in {where}"
