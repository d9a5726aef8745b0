"""Package and key facts parse what dpkg-query, apt-cache, step-ca and openssl print (canned output)."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provisioners.facts.cert import KeyFacts, is_ip, utc_text
from provisioners.facts.packages import DebPackage, VersionLine
from provisioners.facts.preflight import AptCandidate

APT_POLICY = """golang-github-smallstep-certificates-dev:
  Installed: (none)
  Candidate: 0.25.2-1
  Version table:
     0.25.2-1 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
"""


@pytest.mark.parametrize("stdout, want", [
    ("installed\t0.25.2-1", ("installed", "0.25.2-1")),
    ("config-files\t1.0-2", ("config-files", "1.0-2")),
    ("not-installed\t", ("not-installed", None)),
    ("", (None, None)),
])
def test_deb_package(stdout, want):
    assert DebPackage("p").parse(stdout) == want


def test_deb_package_command_and_default():
    assert DebPackage("p").command() == ["dpkg-query", "-W", "-f=${db:Status-Status}\t${Version}", "p"]
    assert DebPackage.default == (None, None)


@pytest.mark.parametrize("stdout, want", [
    (APT_POLICY, "0.25.2-1"),
    (APT_POLICY.replace("Candidate: 0.25.2-1", "Candidate: (none)"), None),
    ("", None),
])
def test_apt_candidate(stdout, want):
    assert AptCandidate("p").parse(stdout) == want


@pytest.mark.parametrize("stdout, want", [
    ("Smallstep CA/0.25.2-1 (linux/amd64)\nRelease Date: x\n", "Smallstep CA/0.25.2-1 (linux/amd64)"),
    ("", ""),
])
def test_version_line(stdout, want):
    assert VersionLine("/x/step-ca").parse(stdout) == want
    assert VersionLine("/x/step-ca").command() == ["/x/step-ca", "version"]


def _pub_pem():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key, key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_key_facts_reads_mode_and_public_key():
    key, pem = _pub_pem()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert KeyFacts("/k").parse("600\n" + pem) == ("600", der)


def test_key_facts_unreadable_key_keeps_the_mode():
    assert KeyFacts("/k").parse("644\nCould not read key\n") == ("644", None)
    assert KeyFacts.default == (None, None)
    assert KeyFacts("/etc/vllm/tls/server.key").command()[-1] == "/etc/vllm/tls/server.key"


@pytest.mark.parametrize("value, want", [("10.0.0.1", True), ("::1", True), ("localhost", False), ("", False)])
def test_is_ip(value, want):
    assert is_ip(value) is want


def test_utc_text():
    import datetime as dt

    t = dt.datetime(2026, 1, 2, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert utc_text(t) == "2026-01-02T03:05:06Z"
