"""Device profiles, one YAML per device (installed as ``ofa_deploy.device_profiles``)."""
