"""SkyDeck's REST API (routes in ``experiments.api.urls``).

Views validate JSON with the serializers here (fields, serializers, bulk, schema) and change data only through
``experiments.services``; ``common.exception_handler`` turns domain errors into HTTP answers.
"""

from experiments.api.common import Pagination, exception_handler

__all__ = ["Pagination", "exception_handler"]
