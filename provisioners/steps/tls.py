"""TLS for the vLLM service from the internal Step-CA (seed 002 "Security", seed 003 s2).

Three steps, in layer order, plus pure helpers for specs:

- `StepCaBinary`: a step-ca binary built from Debian's Go source packages and our own
  `provisioners/steps/stepca/main.go` (Debian ships the library, not `cmd/step-ca`), cached under
  `~/.cache/phoenix/step-ca/<version>/step-ca`. Runs on the CA host (the machine running pytest).
- `LocalCa`: mode `bootstrap` creates a CA (root, intermediate, JWK provisioner, badger db so
  ACME works too) and keeps step-ca running in the background; mode `existing` only trusts a
  site CA through its root fingerprint and uses the provisioner key from `provisioner_key_file`.
- `ServiceCert`: the service key is made ON THE TARGET with openssl (it never leaves it), the CSR
  is read back, signed through a JWK one-time token (`POST /1.0/sign`), and `server.crt`
  (leaf + intermediate), `server.key` (0600) and `ca.crt` (root) are written on the target.

>>> binary = StepCaBinary()                     # doctest: +SKIP
>>> ca = LocalCa(tls_config, binary)           # doctest: +SKIP
>>> cert = ServiceCert(ca, target, "/etc/vllm/tls", ["localhost", "10.0.0.121"], 24)  # doctest: +SKIP
>>> for step in (binary, ca): step.converge(local_target, ledger=ledger)   # doctest: +SKIP
>>> cert.converge(target, ledger=ledger); cert.material.cert_path          # doctest: +SKIP
'/etc/vllm/tls/server.crt'
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import secrets as pysecrets
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import TlsConfig
from provisioners.core.errors import CommandFailed, ConfigError, FactError, ProvisionError, tail
from provisioners.core.progress import emit
from provisioners.core.secrets import register
from provisioners.backends.target import Target

CERTS_PACKAGE = "golang-github-smallstep-certificates-dev"
APT_PACKAGES = ("golang-go", CERTS_PACKAGE)
MAIN_GO = Path(__file__).resolve().parent / "stepca" / "main.go"
DEFAULT_CACHE_DIR = "~/.cache/phoenix/step-ca"
RENEW_FRACTION = 1 / 3          # renew when less than this share of the lifetime is left

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
_DNS = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _local() -> Target:
    from provisioners.backends.local import LocalBackend

    return Target(LocalBackend())


def _utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------ pure helpers
def split_pem(text: str) -> list[str]:
    """The PEM certificates in `text`, in order (a chain file: leaf first)."""
    return [m.group(0) + "\n" for m in _PEM_CERT.finditer(text or "")]


def cert_fingerprint(pem: str | bytes) -> str:
    """SHA-256 of the DER, lowercase hex without colons (what step-ca prints as the root fingerprint)."""
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def normalize_fingerprint(fp: str) -> str:
    """'AB:CD:...' or 'abcd...' -> 'abcd...'."""
    return re.sub(r"[^0-9a-f]", "", fp.lower())


def normalize_sans(sans: Sequence[str]) -> list[str]:
    """Lowercased DNS names and canonical IPs, order kept (the first is the CN), duplicates dropped.

    >>> normalize_sans(["LocalHost", "127.0.0.001", "localhost"])  # doctest: +SKIP
    ['localhost', '127.0.0.1']
    """
    out: list[str] = []
    for raw in sans:
        value = str(raw).strip()
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            value = value.lower().rstrip(".")
            if not _DNS.match(value):
                raise ConfigError(f"TLS SAN {raw!r} is neither an IP address nor a DNS name") from None
        if value not in out:
            out.append(value)
    if not out:
        raise ConfigError("a service certificate needs at least one SAN")
    return out


def inspect_cert(pem: str | bytes) -> dict[str, Any]:
    """Facts about one certificate (the first in `pem`).

    Returns sans (DNS names and IPs as strings), not_before / not_after (aware UTC datetimes),
    issuer, subject (RFC 4514), serial (hex), fingerprint (sha256 hex) and is_ca.
    """
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [*san.get_values_for_type(x509.DNSName),
                *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        sans = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return {
        "sans": sans,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "issuer": cert.issuer.rfc4514_string(),
        "subject": cert.subject.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
        "is_ca": is_ca,
    }


def remaining_fraction(info: dict[str, Any], at: dt.datetime | None = None) -> float:
    """Share of the certificate's total lifetime still ahead (1.0 fresh, 0.0 expired)."""
    now = at or dt.datetime.now(dt.UTC)
    total = (info["not_after"] - info["not_before"]).total_seconds()
    left = (info["not_after"] - now).total_seconds()
    return max(0.0, min(1.0, left / total)) if total > 0 else 0.0


def verify_chain(chain: Sequence[str], root_pem: str, *, name: str | None = None,
                 at: dt.datetime | None = None) -> str | None:
    """Verify leaf + intermediates against `root_pem` alone, as a TLS server cert for `name`.

    Returns None when the chain holds, else the reason. `name` defaults to the leaf's first SAN.
    """
    from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

    if not chain:
        return "empty chain"
    try:
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        inter = [x509.load_pem_x509_certificate(p.encode()) for p in chain[1:]]
        root = x509.load_pem_x509_certificate(root_pem.encode())
    except ValueError as exc:
        return f"unreadable certificate: {exc}"
    if name is None:
        sans = inspect_cert(chain[0])["sans"]
        if not sans:
            return "leaf has no SAN"
        name = sans[0]
    try:
        subject = IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = DNSName(name)
    verifier = (PolicyBuilder().store(Store([root])).time(at or dt.datetime.now(dt.UTC))
                .build_server_verifier(subject))
    try:
        verifier.verify(leaf, inter)
    except VerificationError as exc:
        return f"chain does not verify to the CA root for {name}: {exc}"
    return None


def ssl_context(root_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly this root (no system CAs), hostname checks on."""
    return ssl.create_default_context(cadata=root_pem)


# ----------------------------------------------------------------------------- material
@dataclass(frozen=True)
class TlsMaterial:
    """Where the service's TLS files are. Paths of key/cert/ca are on the service target."""

    key_path: str
    cert_path: str
    ca_path: str
    ca_root_path: str          # the CA root on the CA host (the machine running pytest)
    ca_url: str
    sans: tuple[str, ...] = ()


# ------------------------------------------------------------------------ step 1: binary
class StepCaBinary(Step):
    """A static step-ca binary, built once per (Debian package version, main.go) and cached.

    check: the cached binary exists and `step-ca version` names that version.
    apply: apt-get install golang-go + the smallstep sources if missing, then an offline,
    CGO_ENABLED=0 GOPATH build; the build log streams to `log_path` with progress.
    """

    name = "tls-step-ca-binary"

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, log_dir: str | os.PathLike | None = None,
                 timeout: float = 1800.0):
        self.cache_dir = Path(os.path.expanduser(str(cache_dir or DEFAULT_CACHE_DIR)))
        self.log_dir = Path(log_dir) if log_dir else self.cache_dir
        self.timeout = timeout
        self.log_path = None
        self._path: str | None = None

    @staticmethod
    def main_go_digest() -> str:
        return hashlib.sha256(MAIN_GO.read_bytes()).hexdigest()[:8]

    @staticmethod
    def debian_version(target: Target) -> tuple[str | None, bool]:
        """(version, installed): the installed version, else apt's candidate, else (None, False)."""
        r = target.run(["dpkg-query", "-W", "-f=${db:Status-Status}\t${Version}", CERTS_PACKAGE])
        status, _, version = r.stdout.partition("\t")
        if r.succeeded and status.strip() == "installed" and version.strip():
            return version.strip(), True
        r = target.run(["apt-cache", "policy", CERTS_PACKAGE])
        m = re.search(r"Candidate:\s*(\S+)", r.stdout)
        if r.succeeded and m and m.group(1) != "(none)":
            return m.group(1), False
        return None, False

    def key(self, deb_version: str) -> str:
        """Cache key: Debian version (epoch ':' made path-safe) + digest of our main.go."""
        return f"{deb_version.replace(':', '_')}-main.{self.main_go_digest()}"

    def path_for(self, deb_version: str) -> str:
        return str(self.cache_dir / self.key(deb_version) / "step-ca")

    @property
    def path(self) -> str:
        """The binary, once check() found it (converge first)."""
        if not self._path:
            raise FactError("step-ca binary not resolved yet: converge StepCaBinary first", step=self.name)
        return self._path

    def check(self, target: Target) -> Observed:
        deb, _ = self.debian_version(target)
        if deb is None:
            return Observed(False, {"version": None, "binary": None},
                            f"{CERTS_PACKAGE} is neither installed nor known to apt (apt-get update?)")
        key, path = self.key(deb), self.path_for(deb)
        r = target.run([path, "version"], timeout=30)
        if r.failed:
            return Observed(False, {"version": key, "binary": None}, f"no working step-ca at {path}")
        line = r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""
        if deb not in line:
            return Observed(False, {"version": key, "binary": None}, f"{path} reports {line!r}, want {deb}")
        self._path = path
        return Observed(True, {"version": key, "binary": path}, f"{line} at {path}")

    def apply(self, target: Target, observed: Observed) -> None:
        from filelock import FileLock

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.cache_dir / ".build.lock")):     # xdist workers: one builds, the rest reuse
            if self.check(target).satisfied:
                return
            self.log_path = str(self.log_dir / "step-ca-build.log")
            self._install_packages(target)
            deb, installed = self.debian_version(target)
            if not deb or not installed:
                raise ProvisionError(f"{CERTS_PACKAGE} is still not installed", log_path=self.log_path)
            self._build(target, deb)

    def _install_packages(self, target: Target) -> None:
        missing = []
        for pkg in APT_PACKAGES:
            r = target.run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg])
            if r.stdout.strip() != "installed":
                missing.append(pkg)
        if not missing:
            return
        if target.uid != 0:
            raise ProvisionError(f"step-ca is built from Debian packages that are missing: {' '.join(missing)}; "
                                 f"install them as root: apt-get install -y {' '.join(APT_PACKAGES)}")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "--no-install-recommends",
                *APT_PACKAGES]
        r = target.run(argv, env=env, log_path=self.log_path, progress="apt-get install step-ca sources",
                       timeout=self.timeout)
        if r.failed:        # stale or missing package lists: refresh once and retry
            target.must(["apt-get", "update", "-q"], env=env, log_path=self.log_path,
                        progress="apt-get update", timeout=self.timeout, what="apt-get update failed",
                        step=self.name)
            target.must(argv, env=env, log_path=self.log_path, progress="apt-get install step-ca sources",
                        timeout=self.timeout, what="apt-get install of the step-ca sources failed", step=self.name)

    def _build(self, target: Target, deb: str) -> None:
        out_dir = self.cache_dir / self.key(deb)
        gopath = out_dir / "gopath"
        src = gopath / "src" / "stepca-main"
        target.must(["rm", "-rf", str(gopath)], step=self.name)
        target.put(str(src / "main.go"), MAIN_GO.read_bytes())
        tmp = out_dir / "step-ca.tmp"
        env = {"CGO_ENABLED": "0", "GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "",
               "GOPATH": f"{gopath}:/usr/share/gocode", "GOCACHE": str(self.cache_dir / "go-build")}
        target.must(["go", "build", "-trimpath", "-ldflags", f"-s -w -X main.Version={deb}", "-o", str(tmp), "."],
                    cwd=str(src), env=env, log_path=self.log_path, progress="go build step-ca",
                    timeout=self.timeout, what="go build of step-ca failed", step=self.name)
        target.must(["mv", "-f", str(tmp), self.path_for(deb)], step=self.name)
        target.run(["rm", "-rf", str(gopath)])


# ---------------------------------------------------------------------------- step 2: CA
class LocalCa(Step):
    """The Step-CA the service certs come from.

    mode `bootstrap`: a CA in `tls.ca_dir` (never overwritten once it exists), served by step-ca
    in the background on `address:tls.ca_port` (pid file and log in the CA dir).
    check = /health answers over TLS verified with the CA root alone and ca.json is as wanted;
    apply = init if missing, rewrite ca.json if it drifted (keys untouched), (re)start.
    mode `existing`: nothing is created; /roots.pem must contain `tls.root_fingerprint` and
    /health must answer; the provisioner key is read from `tls.provisioner_key_file`.

    `host` is the CA host (default: this machine); converge it with that same host's Target.
    """

    name = "tls-ca"

    def __init__(self, tls: TlsConfig, binary: StepCaBinary | str | None = None, *, address: str = "127.0.0.1",
                 dns_names: Sequence[str] = (), host: Target | None = None, start_timeout: float = 20.0,
                 state_dir: str | os.PathLike | None = None):
        if tls.mode == "off":
            raise ConfigError("tls.mode is `off`: there is no CA to use")
        if tls.mode == "bootstrap" and binary is None:
            raise ConfigError("tls.mode `bootstrap` needs a step-ca binary (StepCaBinary or a path)")
        self.tls = tls
        self.binary = binary
        self.address = address
        self.host = host or _local()
        self.start_timeout = start_timeout
        self.state_dir = Path(os.path.expanduser(str(state_dir or DEFAULT_CACHE_DIR))) / "existing"
        names = ["localhost", "127.0.0.1"]
        if address not in ("0.0.0.0", "::", ""):
            names.append(address)
        self.dns_names = normalize_sans([*names, *dns_names])
        self.ca_dir = tls.ca_dir.rstrip("/") or "/"
        self.log_path = f"{self.ca_dir}/step-ca.log" if tls.mode == "bootstrap" else None
        self._root: str | None = None
        self._key = None

    # -- paths -------------------------------------------------------------------------
    @property
    def bootstrap(self) -> bool:
        return self.tls.mode == "bootstrap"

    def p(self, name: str) -> str:
        return f"{self.ca_dir}/{name}"

    @property
    def url(self) -> str:
        if self.bootstrap:
            return f"https://localhost:{self.tls.ca_port}"
        return str(self.tls.ca_url).rstrip("/")

    @property
    def root_path(self) -> str:
        """The CA root on the CA host (for `existing`, a verified copy in the local cache)."""
        if self.bootstrap:
            return self.p("root_ca.crt")
        path = self.state_dir / normalize_fingerprint(self.tls.root_fingerprint or "") / "root_ca.crt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.root_pem())
        return str(path)

    def _binary_path(self) -> str:
        return self.binary if isinstance(self.binary, str) else self.binary.path

    # -- client side (used by ServiceCert) -------------------------------------------------
    def root_pem(self) -> str:
        """The CA root PEM. `existing`: fetched and checked against the configured fingerprint."""
        if self._root:
            return self._root
        if self.bootstrap:
            pem = self.host.read_text(self.p("root_ca.crt"))
            if not pem:
                raise FactError(f"no CA root at {self.p('root_ca.crt')} on {self.host.url}", step=self.name)
            self._root = pem
            return pem
        self._root = self._fetch_verified_root()
        return self._root

    def _fetch_verified_root(self) -> str:
        # Trust on first use is bounded by the configured fingerprint (like `step ca bootstrap`).
        want = normalize_fingerprint(self.tls.root_fingerprint or "")
        try:
            r = httpx.get(f"{self.url}/roots.pem", verify=False, timeout=10)
        except httpx.HTTPError as exc:
            raise FactError(f"CA {self.url}: cannot fetch /roots.pem ({exc})", step=self.name) from None
        if r.status_code != 200:
            raise FactError(f"CA {self.url}: /roots.pem answered HTTP {r.status_code}", step=self.name)
        roots = split_pem(r.text)
        for pem in roots:
            if cert_fingerprint(pem) == want:
                return pem
        seen = ", ".join(cert_fingerprint(p) for p in roots) or "none"
        raise FactError(f"CA {self.url}: no root with fingerprint {want} in /roots.pem (found {seen})", step=self.name)

    def pins(self, pem: str) -> bool:
        """True when `pem` is this CA's root (by the configured fingerprint or the root on disk)."""
        try:
            fp = cert_fingerprint(pem)
        except ValueError:
            return False
        if not self.bootstrap:
            return fp == normalize_fingerprint(self.tls.root_fingerprint or "")
        try:
            return fp == cert_fingerprint(self.root_pem())
        except ProvisionError:
            return False

    def provisioner_key(self):
        """The JWK provisioner's private key (jwcrypto JWK); registered as a secret."""
        from jwcrypto import jwk

        if self._key is not None:
            return self._key
        path = self.p("secrets/provisioner.jwk.json") if self.bootstrap else str(self.tls.provisioner_key_file)
        data = self.host.read_text(path)
        if not data:
            raise ConfigError(f"provisioner key file {path} is missing or unreadable on {self.host.url}")
        register(data.strip())
        try:
            key = jwk.JWK.from_json(data) if data.lstrip().startswith("{") else jwk.JWK.from_pem(data.encode())
        except Exception as exc:  # jwcrypto raises several unrelated types
            raise ConfigError(f"provisioner key file {path}: not a private JWK or PEM key "
                              f"({type(exc).__name__})") from None
        if not key.has_private:
            raise ConfigError(f"provisioner key file {path} holds a public key; the private key is needed")
        for part in ("d", "p", "q", "dp", "dq", "qi"):
            value = key.get(part) if hasattr(key, "get") else None
            register(value)
        self._key = key
        return key

    def _token(self, sans: list[str]) -> str:
        from jwcrypto import jwt

        key = self.provisioner_key()
        alg = key.get("alg") or {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}.get(
            key.get("crv"), "RS256")
        now = int(time.time())
        # step-ca writes every token it accepts to its log (api/api.go logOtt). The badger db
        # refuses a reused jti and the token expires in 2 minutes, so that line grants nothing.
        tok = jwt.JWT(header={"alg": alg, "kid": key.get("kid") or key.thumbprint(), "typ": "JWT"},
                      claims={"iss": self.tls.provisioner, "sub": sans[0], "aud": f"{self.url}/1.0/sign",
                              "sans": sans, "iat": now, "nbf": now - 30, "exp": now + 120,
                              "jti": pysecrets.token_hex(16)})
        tok.make_signed_token(key)
        token = tok.serialize()
        register(token)
        return token

    def sign(self, csr_pem: str, sans: Sequence[str], *, lifetime_hours: float | None = None,
             not_before: dt.datetime | None = None, not_after: dt.datetime | None = None) -> list[str]:
        """Sign a CSR through a JWK one-time token; returns [leaf, intermediate, ...] PEMs.

        The CSR's CN must be sans[0] and its SANs exactly `sans` (step-ca checks both).
        """
        sans = normalize_sans(sans)
        body: dict[str, Any] = {"csr": csr_pem, "ott": self._token(sans)}
        if not_after is not None:
            body["notAfter"] = _utc(not_after)
        elif lifetime_hours is not None:
            body["notAfter"] = f"{int(round(lifetime_hours * 60))}m"
        if not_before is not None:
            body["notBefore"] = _utc(not_before)
        try:
            r = httpx.post(f"{self.url}/1.0/sign", json=body, verify=ssl_context(self.root_pem()), timeout=30)
        except httpx.HTTPError as exc:
            raise ProvisionError(f"CA {self.url}: /1.0/sign failed ({exc})", log_path=self.log_path) from None
        if r.status_code != 201:
            try:
                msg = r.json().get("message", r.text)
            except ValueError:
                msg = r.text
            raise ProvisionError(f"CA {self.url} refused to sign for {', '.join(sans)}: HTTP {r.status_code} "
                                 f"{msg} (step-ca logs the real reason)", log_path=self.log_path)
        j = r.json()
        chain = j.get("certChain") or [j["crt"], j["ca"]]
        return [pem if pem.endswith("\n") else pem + "\n" for pem in chain]

    def health(self) -> str | None:
        """None when /health answers ok over TLS verified with the root alone, else why not."""
        try:
            ctx = ssl_context(self.root_pem())
        except (FactError, ssl.SSLError) as exc:
            return str(exc)
        try:
            r = httpx.get(f"{self.url}/health", verify=ctx, timeout=3)
        except httpx.HTTPError as exc:
            return f"{self.url}/health: {type(exc).__name__}: {exc}"
        if r.status_code != 200 or '"ok"' not in r.text:
            return f"{self.url}/health answered HTTP {r.status_code}: {r.text[:200]}"
        return None

    # -- step ----------------------------------------------------------------------------
    def check(self, target: Target) -> Observed:
        return self._check_bootstrap(target) if self.bootstrap else self._check_existing()

    def _check_existing(self) -> Observed:
        state: dict[str, Any] = {"url": self.url, "root_fingerprint": None, "healthy": False}
        try:
            state["root_fingerprint"] = cert_fingerprint(self.root_pem())
            self.provisioner_key()
        except ProvisionError as exc:
            return Observed(False, state, exc.message)
        problem = self.health()
        state["healthy"] = problem is None
        return Observed(problem is None, state, problem or f"existing CA {self.url} healthy, root pinned")

    def _check_bootstrap(self, target: Target) -> Observed:
        state: dict[str, Any] = {"url": self.url, "root_fingerprint": None, "config": None, "healthy": False}
        root = target.read_text(self.p("root_ca.crt"))
        if not root:
            return Observed(False, state, f"no CA in {self.ca_dir}")
        self._root = root
        state["root_fingerprint"] = cert_fingerprint(root)
        register((target.read_text(self.p("secrets/password")) or "").strip())
        raw = target.read_text(self.p("ca.json"))
        try:
            current = json.loads(raw) if raw else None
            wanted = self._ca_json()
        except (ValueError, ProvisionError) as exc:
            return Observed(False, state, f"{self.p('ca.json')}: {exc}")
        state["config"] = "missing" if current is None else "current" if current == wanted else "drifted"
        problem = self.health()
        state["healthy"] = problem is None
        if state["config"] != "current":
            return Observed(False, state, f"{self.p('ca.json')} is {state['config']}")
        return Observed(problem is None, state, problem or f"step-ca healthy at {self.url}")

    def apply(self, target: Target, observed: Observed) -> None:
        if not self.bootstrap:
            raise ProvisionError(f"existing CA {self.url}: {observed.reason} (the suite does not manage it)")
        if observed.state.get("root_fingerprint") is None:
            self._init(target)
        wanted = json.dumps(self._ca_json(), indent=2) + "\n"
        if target.read_text(self.p("ca.json")) != wanted:
            target.put(self.p("ca.json"), wanted, 0o600)
            self.stop(target)                       # a running CA must pick up the new config
        if self.health() is None:
            return
        self.stop(target)                           # alive but not answering: restart it
        self._start(target)

    # -- bootstrap: init ---------------------------------------------------------------------
    def _init(self, target: Target) -> None:
        """Create root, intermediate, provisioner key and password. Refuses a partial CA dir."""
        from jwcrypto import jwk

        present = [n for n in ("root_ca.crt", "root_ca.key", "intermediate_ca.crt", "intermediate_ca.key",
                               "secrets/provisioner.jwk.json", "secrets/password") if target.exists(self.p(n))]
        if present:
            raise ProvisionError(f"{self.ca_dir} holds part of a CA ({', '.join(present)}) but no complete one; "
                                 f"refusing to overwrite it -- move it away or complete it by hand")
        emit(f"{self.name}: creating a CA in {self.ca_dir}")
        password = pysecrets.token_urlsafe(32)
        register(password)
        enc = serialization.BestAvailableEncryption(password.encode())
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        rk = ec.generate_private_key(ec.SECP256R1())
        root = _ca_cert("Phoenix Root CA", rk, rk, None, 1, now)
        ik = ec.generate_private_key(ec.SECP256R1())
        inter = _ca_cert("Phoenix Intermediate CA", ik, rk, root, 0, now)
        pk = jwk.JWK.generate(kty="EC", crv="P-256")
        kid = pk.thumbprint()
        priv = json.dumps({**json.loads(pk.export_private()), "kid": kid, "use": "sig", "alg": "ES256"})
        register(priv)
        register(json.loads(priv)["d"])

        target.must(["mkdir", "-p", "-m", "700", self.ca_dir, self.p("secrets")], step=self.name)
        target.must(["chmod", "700", self.ca_dir, self.p("secrets")], step=self.name)
        pem = serialization.Encoding.PEM
        pkcs8 = serialization.PrivateFormat.PKCS8
        target.put(self.p("secrets/password"), password, 0o600)
        target.put(self.p("secrets/provisioner.jwk.json"), priv, 0o600)
        target.put(self.p("root_ca.key"), rk.private_bytes(pem, pkcs8, enc), 0o600)
        target.put(self.p("intermediate_ca.key"), ik.private_bytes(pem, pkcs8, enc), 0o600)
        target.put(self.p("intermediate_ca.crt"), inter.public_bytes(pem), 0o644)
        target.put(self.p("root_ca.crt"), root.public_bytes(pem), 0o644)     # last: marks the CA complete
        self._root = root.public_bytes(pem).decode()
        self._key = None

    def _ca_json(self) -> dict[str, Any]:
        from jwcrypto import jwk

        priv = json.loads(self.host.read_text(self.p("secrets/provisioner.jwk.json")) or "{}")
        if not priv:
            raise FactError(f"{self.p('secrets/provisioner.jwk.json')} is missing", step=self.name)
        register(priv.get("d"))
        pub = json.loads(jwk.JWK(**priv).export_public())
        pub.update({k: priv[k] for k in ("kid", "use", "alg") if k in priv})
        h = self.tls.cert_lifetime_hours
        return {
            "root": self.p("root_ca.crt"),
            "crt": self.p("intermediate_ca.crt"),
            "key": self.p("intermediate_ca.key"),
            "address": f"{self.address}:{self.tls.ca_port}",
            "dnsNames": self.dns_names,
            "logger": {"format": "text"},
            "db": {"type": "badgerv2", "dataSource": self.p("db")},    # ACME needs a db (recipe s3)
            "authority": {"provisioners": [
                {"type": "ACME", "name": "acme"},
                {"type": "JWK", "name": self.tls.provisioner, "key": pub,
                 "claims": {"minTLSCertDuration": "5m", "defaultTLSCertDuration": f"{h}h",
                            "maxTLSCertDuration": f"{max(h, 720)}h"}},
            ]},
            "tls": {"minVersion": 1.2, "maxVersion": 1.3, "renegotiation": False},
        }

    # -- bootstrap: process ------------------------------------------------------------------
    def pid(self, target: Target | None = None) -> int | None:
        """The pid of our running step-ca (pid file + /proc cmdline), else None."""
        target = target or self.host
        raw = (target.read_text(self.p("step-ca.pid")) or "").strip()
        if not raw.isdigit():
            return None
        cmdline = target.get(f"/proc/{raw}/cmdline") or b""
        if b"step-ca" in cmdline and self.p("ca.json").encode() in cmdline:
            return int(raw)
        return None

    def _start(self, target: Target) -> None:
        # a simple command + '&' so that $! is step-ca itself (recipe s9); new session via the backend
        script = '"$1" --password-file "$2" "$3" >>"$4" 2>&1 </dev/null & echo $! >"$5"'
        target.must(["/bin/sh", "-c", script, "start-step-ca", self._binary_path(), self.p("secrets/password"),
                     self.p("ca.json"), self.p("step-ca.log"), self.p("step-ca.pid")],
                    env={"STEPPATH": self.p("steppath")}, what="could not start step-ca", step=self.name)
        deadline = time.monotonic() + self.start_timeout
        problem = "not polled"
        while time.monotonic() < deadline:
            problem = self.health()
            if problem is None:
                return
            if self.pid(target) is None:
                raise ProvisionError(f"step-ca exited during start-up: {problem}", step=self.name,
                                     log_path=self.log_path, stderr=self._log_tail(target))
            time.sleep(0.1)
        raise ProvisionError(f"step-ca not healthy after {self.start_timeout:.0f}s: {problem}", step=self.name,
                             log_path=self.log_path, stderr=self._log_tail(target))

    def _log_tail(self, target: Target) -> str:
        return tail(target.read_text(self.p("step-ca.log")) or "", 20)

    def stop(self, target: Target | None = None, timeout: float = 15.0) -> bool:
        """Stop our step-ca (TERM, then KILL after `timeout`). True when one was running."""
        target = target or self.host
        pid = self.pid(target)
        if pid is None:
            return False
        target.run(["kill", str(pid)])
        deadline = time.monotonic() + timeout          # badger flushes for about 1 s
        while self.pid(target) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid(target) is not None:
            target.run(["kill", "-9", str(pid)])
        target.run(["rm", "-f", self.p("step-ca.pid")])
        return True


def _ca_cert(cn: str, key, signer_key, signer: x509.Certificate | None, pathlen: int,
             not_before: dt.datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Phoenix"),
                         x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(signer.subject if signer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=3650))
         .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if signer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
                            critical=False)
    return b.sign(signer_key, hashes.SHA256())


# ------------------------------------------------------------------- step 3: service cert
class ServiceCert(Step):
    """The service's key, cert chain and CA root on the target.

    check: server.crt exists, its SANs equal `sans`, leaf + intermediate verify to the CA root,
    server.key (0600) matches it, ca.crt is the root, and more than `renew_fraction` of the
    lifetime is left. Observed.state is {serial, not_after, sans}.
    apply: a new P-256 key and CSR made on the target by openssl, signed by the CA, installed.
    """

    name = "tls-service-cert"

    def __init__(self, ca: LocalCa, target: Target | None, cert_dir: str, sans: Sequence[str],
                 lifetime_hours: float = 24, *, renew_fraction: float = RENEW_FRACTION,
                 key_owner: str | None = None):
        self.ca = ca
        self.target = target
        self.cert_dir = cert_dir.rstrip("/") or "/"
        self.sans = normalize_sans(sans)
        self.lifetime_hours = lifetime_hours
        self.renew_fraction = renew_fraction
        self.key_owner = key_owner           # "user" or "user:group" that runs the service
        self.log_path = ca.log_path

    @classmethod
    def for_config(cls, ca: LocalCa, target: Target | None, sans: Sequence[str], **kw: Any) -> ServiceCert:
        """cert_dir, lifetime and extra SANs from the CA's TlsConfig; `sans` first (sans[0] is the CN)."""
        return cls(ca, target, ca.tls.cert_dir, [*sans, *ca.tls.extra_sans], ca.tls.cert_lifetime_hours, **kw)

    @property
    def key_path(self) -> str:
        return f"{self.cert_dir}/server.key"

    @property
    def cert_path(self) -> str:
        return f"{self.cert_dir}/server.crt"

    @property
    def ca_path(self) -> str:
        return f"{self.cert_dir}/ca.crt"

    @property
    def material(self) -> TlsMaterial:
        return TlsMaterial(key_path=self.key_path, cert_path=self.cert_path, ca_path=self.ca_path,
                           ca_root_path=self.ca.root_path, ca_url=self.ca.url, sans=tuple(self.sans))

    def _key_facts(self, target: Target) -> tuple[str | None, bytes | None]:
        """(mode, public key DER) of server.key, read on the target; the private key stays there."""
        script = '[ -f "$1" ] || exit 3; stat -c %a "$1"; openssl pkey -in "$1" -pubout'
        r = target.run(["/bin/sh", "-c", script, "key-facts", self.key_path])
        if r.failed:
            return None, None
        mode, _, pub = r.stdout.partition("\n")
        try:
            der = serialization.load_pem_public_key(pub.encode()).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        except ValueError:
            return mode.strip(), None
        return mode.strip(), der

    def check(self, target: Target) -> Observed:
        empty: dict[str, Any] = {"serial": None, "not_after": None, "sans": []}
        text = target.read_text(self.cert_path)
        chain = split_pem(text or "")
        if not chain:
            return Observed(False, empty, f"no certificate at {self.cert_path}")
        info = inspect_cert(chain[0])
        state = {"serial": info["serial"], "not_after": _utc(info["not_after"]), "sans": sorted(info["sans"])}
        problems: list[str] = []
        if set(info["sans"]) != set(self.sans):
            problems.append(f"SANs {sorted(info['sans'])} != wanted {sorted(self.sans)}")
        ca_crt = split_pem(target.read_text(self.ca_path) or "")
        try:
            root: str | None = self.ca.root_pem()
        except ProvisionError as exc:
            # a site CA that is down right now: the pinned root already on the target still counts
            root = ca_crt[0] if ca_crt and self.ca.pins(ca_crt[0]) else None
            if root is None:
                problems.append(f"CA root unavailable: {exc.message}")
        if root:
            why = verify_chain(chain, root, name=info["sans"][0] if info["sans"] else None)
            if why:
                problems.append(why)
            if not ca_crt or cert_fingerprint(ca_crt[0]) != cert_fingerprint(root):
                problems.append(f"{self.ca_path} is not the CA root")
        mode, pub = self._key_facts(target)
        leaf_pub = x509.load_pem_x509_certificate(chain[0].encode()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if mode is None:
            problems.append(f"no readable key at {self.key_path}")
        elif pub != leaf_pub:
            problems.append(f"{self.key_path} does not match the certificate")
        elif mode != "600":
            problems.append(f"{self.key_path} has mode {mode}, want 600")
        left = remaining_fraction(info)
        if left <= self.renew_fraction:
            problems.append(f"{left:.0%} of the lifetime left (renew at {self.renew_fraction:.0%}), "
                            f"expires {state['not_after']}")
        if problems:
            return Observed(False, state, "; ".join(problems))
        return Observed(True, state, f"serial {info['serial']} valid until {state['not_after']} "
                                     f"({left:.0%} left) for {', '.join(self.sans)}")

    def apply(self, target: Target, observed: Observed) -> None:
        new_key, new_crt = f"{self.key_path}.new", f"{self.cert_path}.new"
        san = ",".join(f"IP:{s}" if _is_ip(s) else f"DNS:{s}" for s in self.sans)
        # umask 077: the key is 0600 from its first byte; only the CSR (public) comes back
        script = ('set -e; umask 077; mkdir -p "$1"; chmod 755 "$1"; '
                  'openssl ecparam -name prime256v1 -genkey -noout -out "$2"; '
                  'openssl req -new -key "$2" -subj "/CN=$3" -addext "subjectAltName=$4"')
        try:
            r = target.must(["/bin/sh", "-c", script, "make-csr", self.cert_dir, new_key, self.sans[0], san],
                            what=f"could not make a key and CSR on {target.url} (is openssl installed?)",
                            step=self.name)
            csr = r.stdout.strip() + "\n"
            try:
                x509.load_pem_x509_csr(csr.encode())
            except ValueError:
                raise CommandFailed("openssl req printed no CSR", argv=r.argv, rc=r.rc, stderr=r.stdout,
                                    step=self.name) from None
            chain = self.ca.sign(csr, self.sans, lifetime_hours=self.lifetime_hours)
            root = self.ca.root_pem()
            why = verify_chain(chain, root, name=self.sans[0])
            if why:
                raise ProvisionError(f"the CA returned a chain that does not verify: {why}", step=self.name)
            target.put(self.ca_path, root, 0o644)
            target.put(new_crt, "".join(chain), 0o644)
            if self.key_owner:
                target.must(["chown", self.key_owner, new_key], step=self.name)
            target.must(["/bin/sh", "-c", 'mv -f "$1" "$2" && mv -f "$3" "$4"', "install-cert",
                         new_key, self.key_path, new_crt, self.cert_path],
                        what="could not install the new key and certificate", step=self.name)
        finally:
            target.run(["rm", "-f", new_key, new_crt])

    def read(self, target: Target | None = None) -> dict[str, Any] | None:
        """inspect_cert() of the installed leaf, or None (a fact for specs)."""
        t = target or self.target
        if t is None:
            raise FactError("ServiceCert.read needs a target", step=self.name)
        chain = split_pem(t.read_text(self.cert_path) or "")
        return inspect_cert(chain[0]) if chain else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


__all__ = ["StepCaBinary", "LocalCa", "ServiceCert", "TlsMaterial", "inspect_cert", "verify_chain",
           "cert_fingerprint", "normalize_fingerprint", "normalize_sans", "remaining_fraction", "split_pem",
           "ssl_context", "RENEW_FRACTION"]
