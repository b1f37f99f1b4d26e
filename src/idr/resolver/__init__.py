"""Client side: talk to Handle servers, locate services, authenticate."""
