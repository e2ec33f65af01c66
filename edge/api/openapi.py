"""`python -m edge.api.openapi > docs/openapi.json`: the committed copy of the API's OpenAPI document."""

from __future__ import annotations

import json
import sys

from edge.api.app import openapi_document

if __name__ == "__main__":
    sys.stdout.write(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")
