"""Phoenix vLLM spec suite: `pytest specs/ --ctid 921` builds the system and reports on it.

The glue is thin: each fixtures/ module is a pytest plugin (options, config, target,
provisioning layers, reporting); everything that does work lives in provisioners/ and reports/.
"""
pytest_plugins = [
    "fixtures.options",
    "fixtures.config",
    "fixtures.target",
    "fixtures.provisioning",
    "fixtures.container",
    "fixtures.tls",
    "fixtures.docker",
    "fixtures.reporting",
    "fixtures.interrupt",
    "fixtures.evidence",
    "fixtures.performance",
    "fixtures.runlock",
    "fixtures.fleet",
    "fixtures.upgrade",
]
