"""The node's behaviour, independent of transports: resolve, administer, authenticate."""
