"""netc's runtime: models compiled for a backend, their parameters, and the backends that run them."""
