"""Identity resolution: normalized identifiers, the rules in `config/identity.yaml`, persons (OneID)."""
