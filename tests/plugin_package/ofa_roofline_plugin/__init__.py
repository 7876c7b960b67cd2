"""A third-party ofa-deploy backend: a roofline cost model (see :mod:`ofa_roofline_plugin.roofline`)."""

__version__ = "0.1.0"
