"""TLS layer: every vLLM service gets a Step-CA certificate (seed 001 2.1, seed 002, seed 003 6.4).

Checked from outside, the way a client sees it: httpx with only the CA's root, the chain,
the SANs, the expiry window, and plain HTTP refused on the TLS port.
"""
from __future__ import annotations

import datetime as dt
import socket
import ssl

import httpx
import pytest

from provisioners.facts.cert import inspect_cert, remaining_fraction, split_pem, verify_chain
from specs import checks

pytestmark = pytest.mark.layer("tls")


@pytest.fixture(scope="module")
def served_chain(service, tls_material):
    """The certificate chain the vLLM port actually presents."""
    url = httpx.URL(service.base_url)
    ctx = ssl.create_default_context(cafile=tls_material.ca_root_path)
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=url.host) as tls:
            leaf_der = tls.getpeercert(binary_form=True)
            version = tls.version()
    return ssl.DER_cert_to_PEM_cert(leaf_der), version


@pytest.mark.req("R001-2.1-stepca-tls", "R002-S-tls-automation")
def test_vllm_serves_the_step_ca_certificate(service, tls_material, served_chain, target, evidence):
    leaf_pem, version = served_chain
    installed = split_pem(target.read_text(tls_material.cert_path) or "")
    why = checks.same_fingerprint(inspect_cert(leaf_pem)["fingerprint"],
                                  inspect_cert(installed[0])["fingerprint"] if installed else None)
    assert not why, why
    evidence("served certificate", text=f"{inspect_cert(leaf_pem)}\nTLS version: {version}")
    root = open(tls_material.ca_root_path).read()
    problem = verify_chain([leaf_pem, *installed[1:]], root, name=httpx.URL(service.base_url).host)
    assert problem is None, problem


@pytest.mark.req("R001-2.1-stepca-tls")
def test_sans_and_expiry_window(service, tls_material, served_chain):
    info = inspect_cert(served_chain[0])
    why = checks.sans_and_window(info, httpx.URL(service.base_url).host, tls_material.sans,
                                 dt.datetime.now(dt.timezone.utc), remaining_fraction(info))
    assert not why, why


@pytest.mark.req("R003-6.4-v1-models", "R002-S-tls-automation")
def test_models_over_https_with_only_the_root(service, tls_material):
    ctx = ssl.create_default_context(cafile=tls_material.ca_root_path)
    r = httpx.get(f"{service.base_url}/v1/models", verify=ctx, timeout=30)
    why = checks.model_listed(r.status_code, [m["id"] for m in r.json().get("data", [])] if r.status_code == 200 else [],
                              service.served_model)
    assert not why, why


@pytest.mark.req("R001-2.1-stepca-tls")
def test_plain_http_and_untrusted_clients_are_refused(service, tls_material):
    url = httpx.URL(service.base_url)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{url.host}:{url.port}/v1/models", timeout=10)
    with pytest.raises(httpx.ConnectError):   # the system trust store does not know the Step-CA root
        httpx.get(f"{service.base_url}/v1/models", timeout=10)
