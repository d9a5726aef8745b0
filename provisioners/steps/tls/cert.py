"""The service's key, certificate chain and CA root on the target (the key is made there and never
leaves it)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioners.backends.target import Target
from provisioners.core.errors import CommandFailed, FactError, ProvisionError
from provisioners.core.step import Observed, Step
from provisioners.facts.cert import (
    KeyFacts,
    cert_fingerprint,
    inspect_cert,
    is_ip,
    normalize_sans,
    remaining_fraction,
    split_pem,
    utc_text,
    verify_chain,
)
from provisioners.steps.tls.ca import LocalCa

RENEW_FRACTION = 1 / 3          # renew when less than this share of the lifetime is left


@dataclass(frozen=True)
class TlsMaterial:
    """Where the service's TLS files are. Paths of key/cert/ca are on the service target."""

    key_path: str
    cert_path: str
    ca_path: str
    ca_root_path: str          # the CA root on the CA host (the machine running pytest)
    ca_url: str
    sans: tuple[str, ...] = ()


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

    def check(self, target: Target) -> Observed:
        empty: dict[str, Any] = {"serial": None, "not_after": None, "sans": []}
        text = target.read_text(self.cert_path)
        chain = split_pem(text or "")
        if not chain:
            return Observed(False, empty, f"no certificate at {self.cert_path}")
        info = inspect_cert(chain[0])
        state = {"serial": info["serial"], "not_after": utc_text(info["not_after"]), "sans": sorted(info["sans"])}
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
        mode, pub = KeyFacts(self.key_path).read(target)
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
        san = ",".join(f"IP:{s}" if is_ip(s) else f"DNS:{s}" for s in self.sans)
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
