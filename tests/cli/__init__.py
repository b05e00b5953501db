"""End-to-end tests of the irctl command line: real frontends, runc, registry and validators."""
