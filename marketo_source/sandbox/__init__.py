"""A local Marketo Engage sandbox: identity service and Activities API over real HTTP, standard library only.

Start it in-process (`with MarketoSandbox() as sandbox:`), from pytest (fixtures `marketo_sandbox`,
`marketo_sandbox_factory`) or from the shell (`python -m marketo_source.sandbox`).
"""

from .bulk import BulkSpec
from .faults import Fault
from .generator import DEMO_DATA, DataSpec, Lateness
from .limits import Limits
from .sandbox import MarketoSandbox

__all__ = ["BulkSpec", "DEMO_DATA", "DataSpec", "Fault", "Lateness", "Limits", "MarketoSandbox"]
