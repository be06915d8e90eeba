"""HTTP only: parse, authenticate, authorise, call a service, render."""
