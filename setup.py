"""The one C extension (setup.py: pyproject's ext-modules table is still experimental in
setuptools); everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

# UDP bursts in one system call each way (idr.server.udp). Optional: without a C compiler idr
# still installs and runs, one system call per datagram.
setup(ext_modules=[Extension("idr.server._mmsg", ["src/idr/server/_mmsg.c"], optional=True)])
