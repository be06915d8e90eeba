"""Pure rules of nbfleet: no web framework, no database driver."""
