"""The web console: sign-in, notebook list, create form and detail pages over the notebook services."""
