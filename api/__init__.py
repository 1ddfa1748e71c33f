"""The REST API (contract section 3): `create_app()` in `main`, thin routes in `routes/`."""
