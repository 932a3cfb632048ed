"""The 0.x Substra SDK surface on a Substra 1.0 deployment: ``substra_flows.legacy.Client``.

Substra 1.0 removed objectives, algos, tuples, leaderboards, profiles and ``exist_ok``. This
package keeps code written against the 0.x ``substra.Client`` running: the same method names,
argument names, ``data`` dicts and answer dicts, translated onto the 1.0 API through
:class:`substra_flows.SubstraClient`::

    from substra_flows.legacy import Client, exceptions

    client = Client(config_path="~/.substra", profile_name="org-1")
    algo = client.add_composite_algo({...}, exist_ok=True)

How each 0.x notion maps onto 1.0 (details in each module):

- profiles (:mod:`.profiles`): JSON config and user files; passwords never reach the disk;
- algos, aggregate algos, composite algos, objectives (:mod:`.assets`, :mod:`.archives`): 1.0
  functions with the inputs and outputs each 0.x kind implied; an objective is a metric function
  with its test data in metadata;
- tuples and compute plans (:mod:`.translate`, :mod:`.tuples`, :mod:`.plans`): tasks whose keys
  derive from the 0.x identity of the tuple, so AlreadyExists and ``exist_ok`` work as in 0.x;
- reads, leaderboard (:mod:`.reads`, :mod:`.leaderboard`): the 0.x answer shapes from 1.0 tasks,
  models and performances;
- facts 1.0 has no field for (``test_only``, sample content, late dataset-objective links) are
  recorded on the server (:mod:`.records`).

Whatever has no 1.0 meaning raises :class:`~.exceptions.LegacyTranslationError` naming it.
"""

from substra_flows.legacy import exceptions
from substra_flows.legacy.client import Client
from substra_flows.legacy.exceptions import LegacyTranslationError

__all__ = ["Client", "LegacyTranslationError", "exceptions"]
