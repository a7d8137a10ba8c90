"""SkyDeck's REST API (routes in ``experiments.api_urls``).

Views validate JSON with ``experiments.serializers`` and change data only through
``experiments.services``; ``common.exception_handler`` turns domain errors into HTTP answers.
"""

from experiments.api.common import Pagination, exception_handler

__all__ = ["Pagination", "exception_handler"]
