"""Other identifier schemes (GS1 Digital Link, OID, Ecode) mapped onto handles.

Pure functions, no I/O: front-ends parse with these, then resolve the handle they map
to through the core like any other. The mapping is described in ``docs/schemes.md``.
"""

from idr.schemes.common import SchemeError

__all__ = ["SchemeError"]
