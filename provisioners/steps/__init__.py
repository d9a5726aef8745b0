"""The provisioning steps: each one check() -> apply() -> check(), recorded in the ledger."""
