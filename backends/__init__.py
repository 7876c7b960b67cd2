"""Backend plugins, one module per target (installed as ``ofa_deploy.backends``)."""
