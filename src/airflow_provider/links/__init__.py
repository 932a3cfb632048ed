"""Links of the Substra provider."""
