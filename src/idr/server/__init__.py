"""Network front-ends of a node: HTTP (REST API and proxy), TLS, later UDP/TCP and metrics."""
