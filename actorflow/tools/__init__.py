"""Test tools for actorflow: a load sender, a data receiver and input generators."""
