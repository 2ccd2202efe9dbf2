"""The protocols the server speaks, each a tuple of ``http.Route`` declarations over the one data plane.

``ROUTES`` is every route, in the order of the OpenAPI document; the app and the document are both built from it.
"""

from __future__ import annotations

from ..http import Route
from . import openai, operations, sagemaker, v2

ROUTES: tuple[Route, ...] = (*sagemaker.ROUTES, *v2.ROUTES, *operations.ROUTES, *openai.ROUTES)
