"""Package discovery: every package under ofa_deploy/, plus the two top-level folders that install
under its namespace (docs/architecture.md: ``backends/`` -> ``ofa_deploy.backends``, ``device_profiles/`` ->
``ofa_deploy.device_profiles``). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

MAPPED = {"ofa_deploy.backends": "backends", "ofa_deploy.device_profiles": "device_profiles"}

packages = find_packages(include=["ofa_deploy", "ofa_deploy.*"])
for name, folder in MAPPED.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"ofa_deploy": "ofa_deploy", **MAPPED})
