"""The Step-CA the service certificates come from: a bootstrapped CA that step-ca serves in the
background, or an existing site CA trusted through its root fingerprint."""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets as pysecrets
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioners.backends.target import Target
from provisioners.config.phoenix import TlsConfig
from provisioners.core.errors import ConfigError, FactError, ProvisionError, tail
from provisioners.core.progress import emit
from provisioners.core.secrets import register
from provisioners.core.step import Observed, Step
from provisioners.facts.cert import (
    cert_fingerprint,
    normalize_fingerprint,
    normalize_sans,
    split_pem,
    ssl_context,
    utc_text,
)
from provisioners.steps.tls.binary import DEFAULT_CACHE_DIR, StepCaBinary


def _local() -> Target:
    from provisioners.backends.local import LocalBackend

    return Target(LocalBackend())


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
            body["notAfter"] = utc_text(not_after)
        elif lifetime_hours is not None:
            body["notAfter"] = f"{int(round(lifetime_hours * 60))}m"
        if not_before is not None:
            body["notBefore"] = utc_text(not_before)
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
