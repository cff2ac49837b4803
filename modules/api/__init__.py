"""A1111-compatible HTTP API (``/sdapi/v1``): request models in ``models``, routes in ``api`` and ``routes_info``."""
