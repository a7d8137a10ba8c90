"""SkyDeck's REST API (routes in ``experiments.api.urls``).

Views validate JSON with the serializers here (fields, serializers, bulk, schema) and change
data only through ``experiments.services``; ``common.exception_handler`` turns domain errors
into HTTP answers. This file imports nothing: DRF loads the permission class
(``experiments.api.permissions``) while ``rest_framework.views`` itself is loading, so the
package must not pull the views in.
"""
