"""Device profiles this plugin ships (entry-point group ``ofa_deploy.device_profiles``)."""
