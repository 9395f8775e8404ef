"""The HTTP API and the page: one router per resource, the request guard, one error format."""
