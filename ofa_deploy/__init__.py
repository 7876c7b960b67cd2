"""ofa-deploy: put one Once-for-All supernet onto many devices."""

__version__ = "0.1.0"
