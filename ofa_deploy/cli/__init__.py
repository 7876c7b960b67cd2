"""The ``ofa-deploy`` command line: one module per verb, wired together in :mod:`.main`."""
