"""The service's routers, one module per resource; :mod:`factcap.serve.app` mounts them."""
