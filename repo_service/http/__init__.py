"""The HTTP adapter: a Starlette app over the domain core."""
