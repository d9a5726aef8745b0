"""TLS for the vLLM service from the internal Step-CA (seed 002 "Security", seed 003 s2).

Three steps, in layer order (binary.py, ca.py, cert.py); the certificate helpers that specs read
with are provisioners/facts/cert.py:

- `StepCaBinary`: a step-ca binary built from Debian's Go source packages and our own
  `provisioners/steps/tls/stepca/main.go` (Debian ships the library, not `cmd/step-ca`), cached under
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
from provisioners.steps.tls.binary import StepCaBinary
from provisioners.steps.tls.ca import LocalCa
from provisioners.steps.tls.cert import RENEW_FRACTION, ServiceCert, TlsMaterial

__all__ = ["RENEW_FRACTION", "LocalCa", "ServiceCert", "StepCaBinary", "TlsMaterial"]
