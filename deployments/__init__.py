"""Running the product: the command line and, later, the local supervisor."""
