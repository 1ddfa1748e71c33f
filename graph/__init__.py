"""The engine: spec models, validator, builder, nodes and source adapters.

Nothing here knows about the REST API, Celery or the run store; they call into it.
"""

from . import registry

registry.install()  # node types and source kinds come from entry points (graph/registry.py)
