"""The engine: spec models, validator, builder, nodes and source adapters.

Nothing here knows about the REST API, Celery or the run store; they call into it.
"""
