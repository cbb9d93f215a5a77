"""Apps that use connectors: the shapes of Wallaroo's celsius_connectors and of the
connector tests."""
