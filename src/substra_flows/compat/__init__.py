"""Drop-in for the official SDK: ``from substra_flows.compat import Client`` where code used
``substra.Client``. Needs the official ``substra`` package (this subpackage imports it;
``import substra_flows`` alone never does)."""

from substra_flows.compat import exceptions
from substra_flows.compat.client import Client, SdkModels

__all__ = ["Client", "SdkModels", "exceptions"]
