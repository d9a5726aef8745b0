"""Certificate facts: pure helpers on PEM text (what specs and the TLS steps read from a chain) and the
reads of a TLS key on a target. Parsers are pure (tests/test_facts_cert.py).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from provisioners.core.errors import ConfigError
from provisioners.facts import Fact

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
_DNS = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def utc_text(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


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


@dataclass
class KeyFacts(Fact):
    """(mode, public key DER) of a private key file, read on the target with stat and openssl: only the
    public half is printed, the private key stays where it is. (None, None) when there is no such file;
    (mode, None) when openssl cannot read it."""

    path: str
    default: ClassVar[Any] = (None, None)

    def command(self):
        script = '[ -f "$1" ] || exit 3; stat -c %a "$1"; openssl pkey -in "$1" -pubout'
        return ["/bin/sh", "-c", script, "key-facts", self.path]

    def parse(self, stdout):
        mode, _, pub = stdout.partition("\n")
        try:
            der = serialization.load_pem_public_key(pub.encode()).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        except ValueError:
            return mode.strip(), None
        return mode.strip(), der
